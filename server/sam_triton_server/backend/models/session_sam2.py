"""``sam_session`` for a SAM 2 repository: :mod:`~sam_triton_server.backend.models.session` with the
family's three differences, and nothing else changed (cache, TTL, pools, priorities,
deadlines, metrics and routing are the same code):

- an embed sends the *original* image (no ``input_size``): the encoder resizes it itself;
- what is kept per session is the embedding plus both high-resolution feature maps
  (``contract.SAM2.features``, 16 MiB in fp32, all of it counted by the cache's byte bound);
- every click runs the whole SAM 2 decoder with those maps (there is no split decoder).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sam_triton_common.contract import (
    DECODER_OUTPUTS,
    IMAGE,
    IMAGE_EMBEDDINGS,
    IOU_PREDICTIONS,
    LOW_RES_MASKS,
    LOW_RES_SIZE,
    SAM2,
    family_named,
)
from sam_triton_common.transforms import SQUARE_INPUT

from sam_triton_server.backend.embedding_cache import CachedEmbedding
from sam_triton_server.backend.models import session
from sam_triton_server.backend.models._common import Array, InvalidInput
from sam_triton_server.backend.models.decoder import validate_decoder_inputs
from sam_triton_server.backend.models.encoder import validate_original_image

HIGH_RES = SAM2.encoder_outputs[1:]


class TritonPythonModel(session.TritonPythonModel):
    GRAPHS = {"full_decoder": "onnx_file"}

    def setup(self) -> None:
        family = family_named(self.params.get("family", SAM2.name))
        if family is not SAM2:
            raise ValueError(f"session_sam2 serves SAM 2 repositories, this config says {family.name}")
        # The base's split decoder has no SAM 2 graphs; it is never used here (see _decode).
        self.image_features = self.prompt_graph = None  # type: ignore[assignment]
        super().setup()

    def _warm_up(self) -> None:
        features = {name: np.zeros(shape, np.float32) for name, shape in SAM2.features.items()}
        entry = CachedEmbedding(
            features[IMAGE_EMBEDDINGS], SQUARE_INPUT, 0.0, tuple(features[name] for name in HIGH_RES)
        )
        arrays = {
            "point_coords": np.zeros((1, 1, 2, 2), np.float32),
            "point_labels": np.array([[[1, -1]]], np.float32),
            "mask_input": np.zeros((1, 1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32),
            "has_mask_input": np.zeros((1, 1), np.float32),
            "multimask_output": np.ones((1, 1), np.bool_),
        }
        self._run(entry, arrays)

    def _embed(self, session_id: str, request: Any, arrived: float) -> CachedEmbedding:
        rgb = self._uploaded_rgb(request, session_id)  # SAM 2 sends the original: no preprocessing
        image = self.input(request, IMAGE) if rgb is None else rgb[None]
        validate_original_image(image)
        if image.shape[0] != 1:
            raise InvalidInput("sam_session embeds one image per request")
        left_us = self._time_left_us(request, arrived, "encode")
        outputs = self.encode_features_via_bls(
            self.encoder_model,
            {IMAGE: image},
            SAM2.encoder_outputs,
            timeout_us=left_us,
            on_duration=self.pool.record_encode,
        )
        entry = self.cache.put(
            session_id,
            outputs[IMAGE_EMBEDDINGS][0],
            SQUARE_INPUT,
            tuple(outputs[name][0] for name in HIGH_RES),
        )
        if entry is None:
            raise RuntimeError("the embedding cache is smaller than one SAM 2 embedding; raise cache_bytes")
        return entry

    def _decode(self, entry: CachedEmbedding, request: Any) -> dict[str, Array]:
        arrays = self._prompt_arrays(request, entry)
        return self._run(entry, arrays)

    def _run(self, entry: CachedEmbedding, arrays: dict[str, Array]) -> dict[str, Array]:
        arrays[IMAGE_EMBEDDINGS] = entry.embedding[None]
        for name, feature in zip(HIGH_RES, entry.features, strict=True):
            arrays[name] = feature[None]
        validate_decoder_inputs(
            arrays,
            max_prompts=self.max_prompts,
            max_points=self.max_points,
            embedding_is_trusted=True,
            family=SAM2,
        )
        feed = {name: np.ascontiguousarray(arrays[name]) for name in SAM2.decoder_inputs}
        masks, scores = self.full_decoder.run(list(DECODER_OUTPUTS), feed)
        return {LOW_RES_MASKS: masks, IOU_PREDICTIONS: scores}

"""The decoder for mask-free prompts, split at the image features (``sam_triton_export.onnx_decoder``).

Without a mask prompt, part of the decoder's layer 0 depends on the image alone. The
``image_features`` graph computes it once per embedding; the ``prompt_decoder`` graph runs
the rest for each click. Used by ``sam_session`` (features cached with the embedding) and by
``sam-triton verify``, which holds the split to the full decoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import DECODER_OUTPUTS, IMAGE_EMBEDDINGS, IMAGE_FEATURE_NAMES

from sam_triton_server.backend.ort import Session

Array = npt.NDArray[Any]
Features = tuple[Array, ...]


class PromptDecoder:
    def __init__(self, features_session: Session, prompt_session: Session) -> None:
        self._features = features_session
        self._prompts = prompt_session

    def image_features(self, embedding: Array) -> Features:
        """[256, 64, 64] embedding -> the prompt-independent tensors to keep beside it."""
        feed = {IMAGE_EMBEDDINGS: np.ascontiguousarray(embedding[None], dtype=np.float32)}
        return tuple(self._features.run(list(IMAGE_FEATURE_NAMES), feed))

    def run(
        self,
        features: Features,
        point_coords: Array,
        point_labels: Array,
        multimask_output: Array,
    ) -> tuple[Array, Array]:
        """Prompts [1, P, N, 2] / [1, P, N] and multimask [1, 1] -> (low_res_masks, iou_predictions)."""
        feed = {
            **dict(zip(IMAGE_FEATURE_NAMES, features, strict=True)),
            "point_coords": point_coords,
            "point_labels": point_labels,
            "multimask_output": multimask_output,
        }
        masks, scores = self._prompts.run(list(DECODER_OUTPUTS), feed)
        return masks, scores

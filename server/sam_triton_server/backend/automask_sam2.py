"""Server-side automatic masks for SAM 2: ``SAM2AutomaticMaskGenerator`` wired to the encoder and
the full SAM 2 decoder graph (:mod:`sam_triton_server.backend.automask` explains the split and
holds what both families share: limits, cancellation, the wire result).

The two differences from SAM 1's wiring: each crop goes to ``sam_encoder`` as it is (the SAM 2
encoder resizes the original image itself, so crops of different sizes cannot share a batch),
and what comes back is the embedding plus both high-resolution feature maps; every prompt runs
the whole decoder with them (SAM 2 has no split decoder), with ``mask_input`` for ``use_m2m``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from sam_triton_common import amg
from sam_triton_common.contract import DECODER_OUTPUTS, LOW_RES_SIZE, SAM2
from sam_triton_common.proto import automask_pb2

from sam_triton_server.backend.automask import (
    AutomaskLimits,
    CancelCheck,
    Float32Array,
    TimedEncoder,
    UInt8Array,
    answer,
    pad_prompts,
)
from sam_triton_server.backend.ort import Session

EncodeFeaturesFn = Callable[[UInt8Array], dict[str, Float32Array]]
"""(H, W, 3) crop -> ``SAM2.features`` of it, each [1, ...]."""


class Sam2CropEncoder:
    """``encode_fn`` for :func:`sam_triton_common.amg.generate_sam2`: crops are queued and encoded
    one by one when first decoded; the generator walks crops in order, so only the current
    crop's features (16 MiB) are held."""

    def __init__(self, encode: EncodeFeaturesFn, check: CancelCheck | None = None) -> None:
        self._encode = encode
        self._check = check or CancelCheck()
        self._crops: list[UInt8Array | None] = []
        self._current: tuple[int, dict[str, Float32Array]] | None = None
        self.seconds = 0.0

    def __call__(self, crop: UInt8Array) -> int:
        self._crops.append(crop)
        return len(self._crops) - 1

    def features(self, handle: int) -> dict[str, Float32Array]:
        if self._current is None or self._current[0] != handle:
            self._check(f"encoding crop {handle + 1} of {len(self._crops)}")
            crop = self._crops[handle]
            if crop is None:
                raise RuntimeError(f"crop {handle} was already encoded")
            self._crops[handle] = None
            start = time.perf_counter()
            features = {name: np.asarray(a, dtype=np.float32) for name, a in self._encode(crop).items()}
            for name, shape in SAM2.features.items():
                if features.get(name, np.empty(0)).shape != (1, *shape):
                    got = features[name].shape if name in features else None
                    raise RuntimeError(f"encoder returned {name} of shape {got}, expected {[1, *shape]}")
            self.seconds += time.perf_counter() - start
            self._current = (handle, features)
        return self._current[1]


class Sam2OnnxDecoder:
    """``decode_fn`` for :func:`sam_triton_common.amg.generate_sam2` on the exported SAM 2 decoder:
    the generator's (B, 1, 2) points become B prompts of one request, each followed by the -1
    padding point ``SAM2ImagePredictor``'s prompt encoder appends."""

    def __init__(self, session: Session, encoder: Sam2CropEncoder, check: CancelCheck | None = None) -> None:
        self._session = session
        self._encoder = encoder
        self._check = check or CancelCheck()

    def __call__(
        self,
        handle: int,
        coords: npt.NDArray[np.float64],
        labels: npt.NDArray[np.float32],
        mask_input: npt.NDArray[np.float32] | None,
        multimask_output: bool,
    ) -> tuple[Float32Array, Float32Array]:
        self._check(f"decoding a batch of crop {handle + 1}")
        prompts = coords.shape[0]
        padded_coords, padded_labels = pad_prompts(coords, labels)
        masks = np.zeros((1, prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE), dtype=np.float32)
        if mask_input is not None:
            masks[0] = mask_input
        feed = {
            **self._encoder.features(handle),
            "point_coords": padded_coords,
            "point_labels": padded_labels,
            "mask_input": masks,
            "has_mask_input": np.full((1, prompts), float(mask_input is not None), dtype=np.float32),
            "multimask_output": np.array([[multimask_output]], dtype=np.bool_),
        }
        low_res, iou = self._session.run(list(DECODER_OUTPUTS), {n: feed[n] for n in SAM2.decoder_inputs})
        return np.asarray(low_res[0], dtype=np.float32), np.asarray(iou[0], dtype=np.float32)


def run_sam2_automask(
    image: UInt8Array,
    params: amg.AmgParams,
    *,
    encode: EncodeFeaturesFn,
    decoder: Session,
    limits: AutomaskLimits,
    cancelled: Callable[[], bool] = lambda: False,
) -> automask_pb2.AutomaskResult:
    """:func:`~sam_triton_server.backend.automask.run_automask` for a SAM 2 model."""

    def generate(check: CancelCheck) -> tuple[amg.MaskData, TimedEncoder]:
        encoder = Sam2CropEncoder(encode, check)
        data = amg.generate_sam2_mask_data(image, params, encoder, Sam2OnnxDecoder(decoder, encoder, check))
        return data, encoder

    return answer(image, params, limits, cancelled, generate)


def warm_up(decoder: Session, prompts: int = 1) -> None:
    """Decoder calls at load, with and without ``mask_input``, so the first request does not pay
    onnxruntime's first-run set-up; zero features stand in for the encoder. One prompt by
    default: SAM 2's full decoder runs its transformer per prompt, so a full 64-prompt batch
    (what SAM 1's split decoder warms up with) costs start-up time (sam2.1-tiny-test on the busy
    2-core machine: 34.5 s against 0.9 s for one prompt), and the model hands the arena back
    right after anyway (``release_memory``)."""
    zeros = {name: np.zeros((1, *shape), dtype=np.float32) for name, shape in SAM2.features.items()}
    encoder = Sam2CropEncoder(lambda crop: zeros)
    handle = encoder(np.zeros((8, 8, 3), dtype=np.uint8))
    run = Sam2OnnxDecoder(decoder, encoder)
    coords = np.zeros((prompts, 1, 2), dtype=np.float64)
    labels = np.ones((prompts, 1), dtype=np.float32)
    run(handle, coords, labels, None, True)
    run(handle, coords, labels, np.zeros((prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32), False)

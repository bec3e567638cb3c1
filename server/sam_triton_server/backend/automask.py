"""Server-side automatic mask generation: ``sam_triton.amg`` wired to an encoder and an ONNX decoder.

No Triton import here, so everything is testable in-process: the ``sam_automask`` model
(:mod:`sam_triton_server.backend.models.automask`) passes a BLS call to ``sam_encoder`` as
``encode_batch`` and its split decoder sessions as ``decoder``.

Why the decoder runs in-process and the encoder through Triton: one AMG request makes one
encoder call per crop but dozens of decoder calls (``points_per_batch`` prompts each), each
returning ``points_per_batch x 3`` low-res logit maps (12 MiB for 64 prompts). Through BLS
every one of those would be copied through shared memory twice; in-process they never leave
this process, and only the RLE records of the kept masks go back to the client. The encoder,
the expensive part on a GPU, stays a Triton model so crops of concurrent AMG requests and
plain ``embed`` calls share its dynamic batches and its GPU instances.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sam_triton_common import amg
from sam_triton_common.amg.wire import encode_result
from sam_triton_common.errors import InvalidInputError
from sam_triton_common.proto import automask_pb2
from sam_triton_common.transforms import EMBEDDING_SHAPE, prepare_image, preprocess_shape

from sam_triton_server.backend.prompt_decoder import Features, PromptDecoder

UInt8Array = npt.NDArray[np.uint8]
Float32Array = npt.NDArray[np.float32]

EncodeBatchFn = Callable[[UInt8Array, npt.NDArray[np.int32]], Float32Array]
"""(n, 1024, 1024, 3) padded images and (n, 2) input sizes -> (n, 256, 64, 64) embeddings."""


class AutomaskCancelled(Exception):
    """The client cancelled the request or went away; the work stopped before its next batch."""


class CancelCheck:
    """Asked before every encoder and decoder batch: raises AutomaskCancelled once ``cancelled``
    says so, so an abandoned request costs at most the batch already running (a full job of
    a large image is minutes of CPU that nobody would read)."""

    def __init__(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        self._cancelled = cancelled
        self.batches = 0

    def __call__(self, what: str) -> None:
        if self._cancelled():
            raise AutomaskCancelled(
                f"cancelled by the client; stopped before {what} after {self.batches} batches"
            )
        self.batches += 1


@dataclass(frozen=True)
class AutomaskLimits:
    """What one request may ask for; beyond it the request is refused (INVALID_ARGUMENT)."""

    max_image_pixels: int = 8192 * 8192  # the SDK's own default max_pixels
    max_prompts: int = 16384  # decoder prompts over all crops (points_per_side=32 with 2 crop layers is 3072)
    max_crops: int = 85  # crop_n_layers=3 (1 + 4 + 16 + 64); every crop is one encoder run
    max_points_per_batch: int = 256  # prompts per decoder call: bounds the 12 MiB-per-64 logit block


def check_request(image: npt.NDArray[Any], params: amg.AmgParams, limits: AutomaskLimits) -> tuple[int, int]:
    """Refuse images and parameters the server will not run; returns (crops, prompts)."""
    if image.dtype != np.uint8:
        raise InvalidInputError(f"image has dtype {image.dtype}, expected uint8")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"image has shape {list(image.shape)}, expected [height, width, 3] RGB")
    height, width = int(image.shape[0]), int(image.shape[1])
    if height < 2 or width < 2:
        raise InvalidInputError(f"image is {height}x{width}; expected at least 2x2 pixels")
    if height * width > limits.max_image_pixels:
        raise InvalidInputError(
            f"image is {height}x{width} = {height * width} pixels, over this server's limit of "
            f"{limits.max_image_pixels}"
        )
    if params.points_per_batch > limits.max_points_per_batch:
        raise InvalidInputError(
            f"points_per_batch={params.points_per_batch}; this server allows at most "
            f"{limits.max_points_per_batch}"
        )
    # Counted before anything is built: crop boxes and point grids of absurd parameters would
    # take unbounded time and memory (layer i has 4^i crops).
    crops = sum(4**layer for layer in range(params.crop_n_layers + 1))
    if crops > limits.max_crops:
        raise InvalidInputError(
            f"crop_n_layers={params.crop_n_layers} means {crops} crops; this server allows at most "
            f"{limits.max_crops}"
        )
    prompts = sum(size * 4**layer for layer, size in enumerate(params.layer_grid_sizes()))
    if prompts > limits.max_prompts:
        raise InvalidInputError(
            f"these parameters send {prompts} prompts to the decoder; this server allows at most "
            f"{limits.max_prompts} per request (lower points_per_side or crop_n_layers)"
        )
    boxes, _ = amg.generate_crop_boxes((height, width), params.crop_n_layers, params.crop_overlap_ratio)
    for x0, y0, x1, y1 in boxes:
        if x1 - x0 < 1 or y1 - y0 < 1 or min(preprocess_shape(y1 - y0, x1 - x0)) < 1:
            raise InvalidInputError(
                f"image of {height}x{width} pixels is too small or too elongated for crop_n_layers="
                f"{params.crop_n_layers} (crop {[x0, y0, x1, y1]} cannot be encoded)"
            )
    return crops, prompts


class CropEncoder:
    """``encode_fn`` for :func:`sam_triton.amg.generate`: queues crops, encodes them in batches.

    The generator hands over every crop before it decodes the first one. Crops are resized
    only when their batch is due (``max_batch`` at a time, the encoder's batch limit), so the
    whole request becomes as few encoder calls as possible while at most one batch of padded
    images and embeddings is alive; the generator walks crops in order, so embeddings of
    earlier crops are dropped as soon as a later one is asked for.
    """

    def __init__(self, encode_batch: EncodeBatchFn, max_batch: int, check: CancelCheck | None = None) -> None:
        self._encode_batch = encode_batch
        self._max_batch = max(1, max_batch)
        self._check = check or CancelCheck()
        self._crops: list[UInt8Array | None] = []
        self._embeddings: dict[int, Float32Array] = {}
        self.seconds = 0.0

    def __call__(self, crop: UInt8Array) -> int:
        self._crops.append(crop)
        return len(self._crops) - 1

    def embedding(self, handle: int) -> Float32Array:
        if handle not in self._embeddings:
            self._encode_from(handle)
        for old in [k for k in self._embeddings if k < handle]:
            del self._embeddings[old]
        return self._embeddings[handle]

    def _encode_from(self, first: int) -> None:
        self._check(f"encoding crop {first + 1} of {len(self._crops)}")
        start = time.perf_counter()
        handles = [h for h in range(first, len(self._crops)) if self._crops[h] is not None][: self._max_batch]
        prepared = [prepare_image(self._take(h)) for h in handles]
        images = np.stack([image for image, _ in prepared])
        sizes = np.asarray([size for _, size in prepared], dtype=np.int32)
        embeddings = np.asarray(self._encode_batch(images, sizes), dtype=np.float32)
        if embeddings.shape != (len(handles), *EMBEDDING_SHAPE):
            raise RuntimeError(
                f"encoder returned embeddings of shape {embeddings.shape} for {len(handles)} crops"
            )
        for i, h in enumerate(handles):
            self._embeddings[h] = embeddings[i : i + 1]
        self.seconds += time.perf_counter() - start

    def _take(self, handle: int) -> UInt8Array:
        crop = self._crops[handle]
        if crop is None:
            raise RuntimeError(f"crop {handle} was already encoded")
        self._crops[handle] = None  # the generator keeps no reference either: free it
        return crop


def pad_prompts(
    coords: npt.NDArray[np.float64], labels: npt.NDArray[np.float32]
) -> tuple[Float32Array, Float32Array]:
    """The generator's (B, N, 2) points and (B, N) labels as one request of B prompts, each
    followed by the (0, 0) point labelled -1 that the prompt encoder appends to point-only
    prompts (the exported graphs expect the caller to append it)."""
    prompts = coords.shape[0]
    padded_coords = np.zeros((1, prompts, coords.shape[1] + 1, 2), dtype=np.float32)
    padded_coords[0, :, :-1] = coords
    padded_labels = np.full((1, prompts, labels.shape[1] + 1), -1.0, dtype=np.float32)
    padded_labels[0, :, :-1] = labels
    return padded_coords, padded_labels


class OnnxPointDecoder:
    """``decode_fn`` for :func:`sam_triton.amg.generate` on the exported split decoder graphs.

    The generator sends what ``SamPredictor.predict_torch`` gets, one point per prompt and no
    box or mask; SAM's prompt encoder then appends a (0, 0) point labelled -1, which the ONNX
    graph (like SAM's own ONNX example) expects the caller to append. Mask-free prompts are
    what :class:`PromptDecoder` is for: each crop's image features are computed once, not
    once per prompt as the full decoder would.
    """

    def __init__(
        self, decoder: PromptDecoder, encoder: CropEncoder, check: CancelCheck | None = None
    ) -> None:
        self._decoder = decoder
        self._encoder = encoder
        self._check = check or CancelCheck()
        self._features: tuple[int, Features] | None = None  # the generator walks crops in order

    def __call__(
        self, handle: int, coords: npt.NDArray[np.float64], labels: npt.NDArray[np.float32]
    ) -> tuple[Float32Array, Float32Array]:
        self._check(f"decoding a batch of crop {handle + 1}")
        padded_coords, padded_labels = pad_prompts(coords, labels)
        embedding = self._encoder.embedding(handle)[0]
        if self._features is None or self._features[0] != handle:
            self._features = (handle, self._decoder.image_features(embedding))
        low_res, iou = self._decoder.run(
            self._features[1], padded_coords, padded_labels, np.ones((1, 1), dtype=np.bool_)
        )
        return np.asarray(low_res[0], dtype=np.float32), np.asarray(iou[0], dtype=np.float32)


class TimedEncoder(Protocol):
    seconds: float
    """Seconds spent encoding crops so far."""


def answer(
    image: UInt8Array,
    params: amg.AmgParams,
    limits: AutomaskLimits,
    cancelled: Callable[[], bool],
    generate: Callable[[CancelCheck], tuple[amg.MaskData, TimedEncoder]],
) -> automask_pb2.AutomaskResult:
    """Check the request, ``generate`` its masks (any family's), pack them as the wire result."""
    start = time.perf_counter()
    crops, prompts = check_request(image, params, limits)
    data, encoder = generate(CancelCheck(cancelled))
    return encode_result(
        data,
        (int(image.shape[0]), int(image.shape[1])),
        crops=crops,
        prompts=prompts,
        encode_seconds=encoder.seconds,
        total_seconds=time.perf_counter() - start,
    )


def run_automask(
    image: UInt8Array,
    params: amg.AmgParams,
    *,
    encode_batch: EncodeBatchFn,
    decoder: PromptDecoder,
    encoder_max_batch: int,
    limits: AutomaskLimits,
    cancelled: Callable[[], bool] = lambda: False,
) -> automask_pb2.AutomaskResult:
    """Check, generate, and pack one request's masks as the wire result; AutomaskCancelled
    as soon as ``cancelled()`` is true before a batch."""

    def generate(check: CancelCheck) -> tuple[amg.MaskData, TimedEncoder]:
        encoder = CropEncoder(encode_batch, encoder_max_batch, check)
        return amg.generate_mask_data(
            image, params, encoder, OnnxPointDecoder(decoder, encoder, check)
        ), encoder

    return answer(image, params, limits, cancelled, generate)


def warm_up(decoder: PromptDecoder, prompts: int = 64) -> None:
    """One decoder call of a full AMG batch at load, so the first request does not pay
    onnxruntime's first-run allocations (a zero embedding stands in for the encoder)."""

    def zero_embeddings(images: UInt8Array, sizes: npt.NDArray[np.int32]) -> Float32Array:
        return np.zeros((len(images), *EMBEDDING_SHAPE), dtype=np.float32)

    encoder = CropEncoder(zero_embeddings, 1)
    handle = encoder(np.zeros((8, 8, 3), dtype=np.uint8))
    coords = np.zeros((prompts, 1, 2), dtype=np.float64)
    OnnxPointDecoder(decoder, encoder)(handle, coords, np.ones((prompts, 1), dtype=np.float32))

"""The sans-IO core shared by :class:`SamClient` and :class:`AsyncSamClient`.

Every SDK operation is a generator that validates and encodes its inputs, *yields* the gRPC
calls it needs (a list: calls in one list are independent and may run concurrently), receives
their responses, and *returns* the typed result. It never touches the network, so the sync
and asyncio clients share all of the logic and differ only in how they perform a call:

    def run_sync(op):            # SamClient
        step = next(op)          # -> [Call, ...]
        while True:
            step = op.send([invoke(c) for c in step])   # until StopIteration(value=result)

Invalid input therefore fails before anything is sent. Retries and deadlines live here too
(:class:`Attempts`), again without I/O: the clients only sleep for the delay it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message

from . import errors
from ._tensors import build_infer_request, decode_infer_response, require_output
from .config import ClientConfig
from .images import ImageFormat, ImageInput, load_image
from .prompts import Prompt, as_prompt_list, encode_prompt, group_by_points
from .proto import inference_pb2 as pb
from .results import ImageEmbedding, ModelMetadata, Prediction, TensorSpec
from .transforms import EMBEDDING_SHAPE, LOW_RES_SIZE, masks_from_logits, postprocess_masks, prepare_image

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Call:
    """One unary RPC to perform: the stub method name, its request, and a label for errors."""

    method: str
    request: Message
    context: str


Op = Generator[list[Call], list[Any], T]
"""An operation: yields batches of calls, receives their responses in order, returns T."""


# --------------------------------------------------------------------------- drivers


def run_sync(op: Op[T], execute: Callable[[Sequence[Call]], list[Any]]) -> T:
    """Drive ``op`` to completion with a blocking ``execute`` (calls -> responses)."""
    try:
        step = next(op)
        while True:
            step = op.send(execute(step))
    except StopIteration as stop:
        result: T = stop.value
        return result


def _advance(op: Op[T], value: list[Any] | None) -> tuple[bool, Any]:
    """Resume ``op``: (False, next calls) or (True, result); StopIteration must not cross threads."""
    try:
        return False, (next(op) if value is None else op.send(value))
    except StopIteration as stop:
        return True, stop.value


async def run_async(op: Op[T], execute: Callable[[Sequence[Call]], Awaitable[list[Any]]]) -> T:
    """Drive ``op`` to completion with an awaitable ``execute``.

    The op's own steps (image decoding and resizing, mask upscaling) are CPU work that would
    stall the event loop for milliseconds per image; they run in the default executor instead
    (numpy and Pillow release the GIL), so concurrent requests really overlap.
    """
    loop = asyncio.get_running_loop()
    done, value = await loop.run_in_executor(None, _advance, op, None)
    while not done:
        responses = await execute(value)
        done, value = await loop.run_in_executor(None, _advance, op, responses)
    result: T = value
    return result


class Attempts:
    """Deadline and retry bookkeeping for one SDK call (shared by all of its RPCs).

    Usage (sync; the asyncio client is the same with ``await asyncio.sleep``)::

        while True:
            try:
                return rpc(request, timeout=attempts.timeout())
            except grpc.RpcError as exc:
                time.sleep(attempts.on_error(exc, call.context))   # raises when giving up
    """

    def __init__(self, config: ClientConfig) -> None:
        self._policy = config.retry
        self._deadline = None if config.timeout is None else time.monotonic() + config.timeout
        self._timeout = config.timeout
        self._attempt = 0

    def remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def timeout(self, context: str = "") -> float | None:
        """Seconds left for the next RPC; raises DeadlineExceededError when none are."""
        left = self.remaining()
        if left is not None and left <= 0:
            raise errors.DeadlineExceededError(
                f"{context}: deadline of {self._timeout}s exceeded before the call could be sent",
                code="DEADLINE_EXCEEDED",
            )
        return left

    def on_error(self, exc: BaseException, context: str) -> float:
        """Map a failed RPC; return the backoff before retrying, or raise the SDK error."""
        error = errors.from_rpc_error(exc, context=context)
        delay = self._policy.delay(error, self._attempt, self.remaining())
        if delay is None:
            if self._attempt:
                error.message += f" (after {self._attempt} retries)"
                error.args = (error.message,)
            raise error from exc
        self._attempt += 1
        return delay


# --------------------------------------------------------------------------- health and metadata


def server_live_op() -> Op[bool]:
    (resp,) = yield [Call("ServerLive", pb.ServerLiveRequest(), "ServerLive")]
    return bool(resp.live)


def server_ready_op() -> Op[bool]:
    (resp,) = yield [Call("ServerReady", pb.ServerReadyRequest(), "ServerReady")]
    return bool(resp.ready)


def model_ready_op(name: str, version: str = "") -> Op[bool]:
    request = pb.ModelReadyRequest(name=name, version=version)
    (resp,) = yield [Call("ModelReady", request, f"ModelReady({name})")]
    return bool(resp.ready)


def all_ready_op(models: Sequence[str]) -> Op[bool]:
    """Server ready and every named model ready, asked in one concurrent step."""
    calls = [Call("ServerReady", pb.ServerReadyRequest(), "ServerReady")]
    calls += [Call("ModelReady", pb.ModelReadyRequest(name=m), f"ModelReady({m})") for m in models]
    responses = yield calls
    return bool(responses[0].ready) and all(bool(r.ready) for r in responses[1:])


def model_metadata_op(name: str, version: str = "") -> Op[ModelMetadata]:
    request = pb.ModelMetadataRequest(name=name, version=version)
    (resp,) = yield [Call("ModelMetadata", request, f"ModelMetadata({name})")]

    def specs(items: Any) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in items)

    return ModelMetadata(
        resp.name, tuple(resp.versions), resp.platform, specs(resp.inputs), specs(resp.outputs)
    )


# --------------------------------------------------------------------------- inference


def infer_call(config: ClientConfig, request: pb.ModelInferRequest, context: str) -> Call:
    """A ModelInfer call, refused locally when it could never pass the message-size limit."""
    size = request.ByteSize()
    if size > config.max_message_bytes:
        raise errors.ResourceExhaustedError(
            f"{context}: request is {size} bytes, over max_message_bytes={config.max_message_bytes}; "
            "send fewer prompts per call or raise max_message_bytes"
        )
    return Call("ModelInfer", request, context)


def _encoder_inputs(rgb: npt.NDArray[np.uint8]) -> tuple[dict[str, npt.NDArray[Any]], tuple[int, int]]:
    padded, input_size = prepare_image(rgb)
    return {"image": padded[None], "input_size": np.array([input_size], dtype=np.int32)}, input_size


def embed_op(
    config: ClientConfig, image: ImageInput, image_format: ImageFormat = "RGB"
) -> Op[ImageEmbedding]:
    """Preprocess an image and run ``sam_encoder``; the embedding comes back to the client."""
    rgb = load_image(image, image_format, max_pixels=config.max_pixels)
    return (yield from embed_rgb_op(config, rgb))


def embed_rgb_op(config: ClientConfig, rgb: npt.NDArray[np.uint8]) -> Op[ImageEmbedding]:
    """:func:`embed_op` for an already loaded HxWx3 RGB array."""
    model = config.models.encoder
    inputs, input_size = _encoder_inputs(rgb)
    request = build_infer_request(model, inputs, ["image_embeddings"], model_version=config.models.version)
    (resp,) = yield [infer_call(config, request, f"embed via {model!r}")]
    emb = require_output(decode_infer_response(resp), "image_embeddings", model)
    if emb.size != int(np.prod(EMBEDDING_SHAPE)) or emb.dtype != np.float32:
        raise errors.ServerError(
            f"{model!r} returned image_embeddings {emb.dtype}{list(emb.shape)}, expected FP32[1,256,64,64]"
        )
    original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
    return ImageEmbedding(emb.reshape(EMBEDDING_SHAPE).astype(np.float32), original_size, input_size)


def _decoder_prompt_inputs(batch: Any, multimask_output: bool) -> dict[str, npt.NDArray[Any]]:
    # Batch dim 1 in front of every tensor: the models have max_batch_size > 0.
    return {
        "point_coords": batch.point_coords[None],
        "point_labels": batch.point_labels[None],
        "mask_input": batch.mask_input[None],
        "has_mask_input": batch.has_mask_input[None],
        "multimask_output": np.array([[multimask_output]], dtype=np.bool_),
    }


def _embedding_inputs(
    config: ClientConfig, embedding: ImageEmbedding
) -> tuple[str, dict[str, npt.NDArray[Any]]]:
    """Decoder model and the tensors that identify the image for it.

    Today the embedding travels with the request; a server-held session (``session_id``) will
    select its own model here, and nothing else in the call path has to change.
    """
    if embedding.embedding is not None:
        emb = np.asarray(embedding.embedding, dtype=np.float32)
        if emb.shape != EMBEDDING_SHAPE:
            raise errors.InvalidInputError(f"embedding has shape {emb.shape}; expected {EMBEDDING_SHAPE}")
        return config.models.decoder, {"image_embeddings": emb[None]}
    raise errors.InvalidInputError(
        "this ImageEmbedding holds no embedding array (server-held session "
        f"{embedding.session_id!r}) and this client has no session model configured"
    )


def _decode_predictions(
    outputs: dict[str, npt.NDArray[Any]],
    model: str,
    count: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    return_logits: bool,
) -> list[Prediction]:
    low = require_output(outputs, "low_res_masks", model).astype(np.float32, copy=False)
    iou = require_output(outputs, "iou_predictions", model).astype(np.float32, copy=False)
    if low.ndim < 3 or low.shape[-2:] != (LOW_RES_SIZE, LOW_RES_SIZE) or low.size % (count * LOW_RES_SIZE**2):
        raise errors.ServerError(
            f"{model!r} returned low_res_masks of shape {list(low.shape)} for {count} prompts"
        )
    low = low.reshape(count, -1, LOW_RES_SIZE, LOW_RES_SIZE)
    iou = iou.reshape(count, -1)
    if iou.shape[1] != low.shape[1]:
        raise errors.ServerError(f"{model!r} returned {iou.shape[1]} scores for {low.shape[1]} masks")
    predictions = []
    for p in range(count):
        logits = postprocess_masks(low[p], input_size, original_size)
        masks = logits if return_logits else masks_from_logits(logits)
        predictions.append(Prediction(masks=masks, scores=iou[p].copy(), low_res_logits=low[p].copy()))
    return predictions


def _prompt_list(config: ClientConfig, prompts: Prompt | Sequence[Prompt]) -> tuple[list[Prompt], bool]:
    items, single = as_prompt_list(prompts)
    if len(items) > config.max_prompts:
        raise errors.InvalidInputError(
            f"{len(items)} prompts in one call; the limit is max_prompts={config.max_prompts}"
        )
    return items, single


def predict_op(
    config: ClientConfig,
    embedding: ImageEmbedding,
    prompts: Prompt | Sequence[Prompt],
    multimask_output: bool = True,
    return_logits: bool = False,
) -> Op[Prediction | list[Prediction]]:
    """Decode prompts against an embedding; one request per group of equal-N prompts, concurrently."""
    items, single = _prompt_list(config, prompts)
    encoded = [encode_prompt(p, embedding.original_size) for p in items]
    model, image_inputs = _embedding_inputs(config, embedding)
    batches = group_by_points(encoded, config.max_prompts_per_request)
    calls = []
    for batch in batches:
        inputs = {**image_inputs, **_decoder_prompt_inputs(batch, multimask_output)}
        request = build_infer_request(
            model, inputs, ["low_res_masks", "iou_predictions"], model_version=config.models.version
        )
        calls.append(infer_call(config, request, f"predict via {model!r}"))
    responses = yield calls
    results: list[Prediction | None] = [None] * len(items)
    for batch, resp in zip(batches, responses, strict=True):
        preds = _decode_predictions(
            decode_infer_response(resp),
            model,
            len(batch.indices),
            embedding.input_size,
            embedding.original_size,
            return_logits,
        )
        for i, pred in zip(batch.indices, preds, strict=True):
            results[i] = pred
    done = [r for r in results if r is not None]
    return done[0] if single else done


def segment_op(
    config: ClientConfig,
    image: ImageInput,
    prompts: Prompt | Sequence[Prompt],
    image_format: ImageFormat = "RGB",
    multimask_output: bool = True,
    return_logits: bool = False,
) -> Op[Prediction | list[Prediction]]:
    """Image + prompts -> masks. One ``sam`` ensemble round trip when all prompts share N.

    Prompts with different point counts need several decoder calls; rather than re-encoding
    the image once per group in the ensemble, embed once and decode each group.
    """
    rgb = load_image(image, image_format, max_pixels=config.max_pixels)
    original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
    items, single = _prompt_list(config, prompts)
    encoded = [encode_prompt(p, original_size) for p in items]
    batches = group_by_points(encoded, config.max_prompts_per_request)
    if len(batches) > 1:
        embedding = yield from embed_rgb_op(config, rgb)
        return (yield from predict_op(config, embedding, prompts, multimask_output, return_logits))
    (batch,) = batches
    model = config.models.ensemble
    image_inputs, input_size = _encoder_inputs(rgb)
    inputs = {**image_inputs, **_decoder_prompt_inputs(batch, multimask_output)}
    request = build_infer_request(
        model, inputs, ["low_res_masks", "iou_predictions"], model_version=config.models.version
    )
    (resp,) = yield [infer_call(config, request, f"segment via {model!r}")]
    preds = _decode_predictions(
        decode_infer_response(resp), model, len(items), input_size, original_size, return_logits
    )
    return preds[0] if single else preds

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
A call that fails with an SDK error is *thrown into* the operation at its ``yield``, so an
operation can answer a failure with more calls (a server-held embedding that was evicted is
encoded again and the prompts re-sent) - still without I/O of its own.

Server-held embeddings (``sam_session``): ``embed`` names the image by its content
(``sha256:...``), asks the server whether it holds that id (a few hundred bytes), and uploads
the image only when it does not; ``predict`` then sends the id and the prompts. Which model a
prediction goes to, and with what, is decided in one place: :func:`_embedding_inputs`.
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
from sam_triton_common.contract import (
    CACHE_HIT,
    CONTENT_ID_MISMATCH,
    CONTENT_ID_PREFIX,
    ENCODED_IMAGE,
    IMAGE,
    IMAGE_EMBEDDINGS,
    INPUT_SIZE,
    IOU_PREDICTIONS,
    LOW_RES_MASKS,
    MASKS,
    MAX_SESSION_ID_BYTES,
    ORIGINAL_SIZE,
    PREDICTION_ID,
    PREDICTION_NOT_HELD,
    REFINE_FROM,
    REFINE_MASK,
    SAM1,
    SAM2,
    SESSION_ID,
    Family,
    family_named,
    family_of_encoder,
    model_of,
)
from sam_triton_common.contract import SESSION_HEADER as SESSION_HEADER
from sam_triton_common.images import content_id as content_id
from sam_triton_common.mask_codec import mask_shape
from sam_triton_common.transforms import (
    EMBEDDING_SHAPE,
    LOW_RES_SIZE,
    SQUARE_INPUT,
    postprocess_masks,
    postprocess_to_masks,
    prepare_image,
    preprocess_shape,
)

from . import errors, family_sam2
from ._tensors import build_infer_request, decode_infer_response, require_output
from .config import ClientConfig, Priority
from .images import ImageFormat, ImageInput, load_image, load_with_source
from .prompts import Prompt, PromptBatch, as_prompt_list, encode_prompt, group_by_points
from .proto import inference_pb2 as pb
from .results import ImageEmbedding, ModelMetadata, Prediction, PreviousMask, TensorSpec
from .uploads import encoded_upload

T = TypeVar("T")


Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, eq=False)
class Call:
    """One unary RPC to perform: the stub method name, its request, and a label for errors.

    ``metadata`` holds extra gRPC headers for this call only (sent after the client's own).
    """

    method: str
    request: Message
    context: str
    metadata: Metadata = ()


Op = Generator[list[Call], list[Any], T]
"""An operation: yields batches of calls, receives their responses in order, returns T."""


# --------------------------------------------------------------------------- drivers


def run_sync(op: Op[T], execute: Callable[[Sequence[Call]], list[Any]]) -> T:
    """Drive ``op`` to completion with a blocking ``execute`` (calls -> responses).

    An SDK error raised by ``execute`` is thrown into ``op``, which may handle it with more calls.
    """
    op = naming_served_models(op)
    try:
        step = next(op)
        while True:
            try:
                responses = execute(step)
            except errors.SamTritonError as exc:
                step = op.throw(exc)
            else:
                step = op.send(responses)
    except StopIteration as stop:
        result: T = stop.value
        return result


def _advance(
    op: Op[T], value: list[Any] | None, error: errors.SamTritonError | None = None
) -> tuple[bool, Any]:
    """Resume ``op``: (False, next calls) or (True, result); StopIteration must not cross threads."""
    try:
        if error is not None:
            return False, op.throw(error)
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
    op = naming_served_models(op)
    done, value = await loop.run_in_executor(None, _advance, op, None)
    while not done:
        try:
            responses = await execute(value)
        except errors.SamTritonError as exc:
            done, value = await loop.run_in_executor(None, _advance, op, None, exc)
        else:
            done, value = await loop.run_in_executor(None, _advance, op, responses)
    result: T = value
    return result


def observe(config: ClientConfig, call: Call, response: Message | None) -> None:
    """Report one RPC attempt (``response`` None: it failed) to ``config.rpc_observer``, if any."""
    if config.rpc_observer is not None:
        received = 0 if response is None else response.ByteSize()
        config.rpc_observer(call.method, call.request.ByteSize(), received)


class Attempts:
    """Deadline and retry bookkeeping for one SDK call (shared by all of its RPCs).

    Usage (sync; the asyncio client is the same with ``await asyncio.sleep``)::

        while True:
            try:
                return rpc(request, timeout=attempts.timeout())
            except grpc.RpcError as exc:
                time.sleep(attempts.on_error(exc, call.context))   # raises when giving up
    """

    def __init__(self, config: ClientConfig, priority: int | None = None) -> None:
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or priority < 1
        ):
            raise errors.InvalidInputError(f"priority must be an int >= 1 (1 goes first), got {priority!r}")
        self.priority = None if priority is None else int(priority)
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

    def prepare(self, call: Call) -> tuple[Message, float | None]:
        """The request to send now and its gRPC timeout.

        A ModelInfer carries the time left as the KServe ``timeout`` parameter (microseconds),
        so Triton drops it from a queue, uncomputed, once the caller has given up; and the
        call's priority override, if any (the op's own class otherwise, see Priority).
        """
        left = self.timeout(call.context)
        request = call.request
        if isinstance(request, pb.ModelInferRequest):
            if left is not None:
                request.parameters["timeout"].int64_param = max(1, int(left * 1e6))
            if self.priority is not None:
                request.parameters["priority"].uint64_param = self.priority
        return request, left

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


def default_models(config: ClientConfig) -> list[str]:
    """The models an ``embed`` + ``predict`` session needs (what ``wait_until_ready`` waits for)."""
    names = [config.models.encoder, config.models.decoder]
    return [*names, config.models.session] if config.server_embeddings else names


def model_metadata_op(name: str, version: str = "") -> Op[ModelMetadata]:
    request = pb.ModelMetadataRequest(name=name, version=version)
    (resp,) = yield [Call("ModelMetadata", request, f"ModelMetadata({name})")]

    def specs(items: Any) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in items)

    return ModelMetadata(
        resp.name, tuple(resp.versions), resp.platform, specs(resp.inputs), specs(resp.outputs)
    )


def served_models_op() -> Op[list[str | None]]:
    """The models the server has loaded (None: the unnamed one; others by their
    ``sam-triton export --name``), from its repository index."""
    request = pb.RepositoryIndexRequest(ready=True)
    (resp,) = yield [Call("RepositoryIndex", request, "RepositoryIndex")]
    found = {parsed[0] for m in resp.models if (parsed := model_of(m.name)) is not None}
    return sorted(found, key=lambda name: (name is not None, name or ""))


def naming_served_models(op: Op[T]) -> Op[T]:
    """``op``, whose ModelNotFoundError also lists the models the server does have (one more
    call, made only then), so a wrong ``model=`` says what to choose instead."""
    try:
        return (yield from op)
    except errors.ModelNotFoundError as exc:
        try:
            served = yield from served_models_op()
        except errors.SamTritonError:
            raise exc from None  # the index is unavailable: the original error stands
        names = ", ".join("the unnamed one (no model=)" if m is None else repr(m) for m in served)
        listing = f"this server serves {names}" if served else "this server serves no SAM model"
        raise errors.ModelNotFoundError(
            f"{exc}; {listing}", code=exc.code, server_message=exc.server_message
        ) from None


def family_op(config: ClientConfig) -> Op[Family]:
    """The family of the encoder model this client talks to: asked once (ModelMetadata: the
    encoder's outputs name it), then remembered for the client's life."""
    name = config.models.encoder
    if name not in config.families:
        meta = yield from model_metadata_op(name, config.models.version)
        try:
            config.families[name] = family_of_encoder([o.name for o in meta.outputs]).name
        except ValueError as e:
            raise errors.ServerError(f"{name!r}: {e}") from None
    return family_named(config.families[name])


def encode_prompts(family: Family, items: Sequence[Prompt], original_size: tuple[int, int]) -> list[Any]:
    """Each prompt as decoder rows for ``family``'s model."""
    encode = family_sam2.encode_prompt if family is SAM2 else encode_prompt
    return [encode(p, original_size) for p in items]


# --------------------------------------------------------------------------- inference


def infer_call(
    config: ClientConfig, request: pb.ModelInferRequest, context: str, metadata: Metadata = ()
) -> Call:
    """A ModelInfer call, refused locally when it could never pass the message-size limit."""
    size = request.ByteSize()
    if size > config.max_message_bytes:
        raise errors.ResourceExhaustedError(
            f"{context}: request is {size} bytes, over max_message_bytes={config.max_message_bytes}; "
            "send fewer prompts per call or raise max_message_bytes"
        )
    return Call("ModelInfer", request, context, metadata)


def encoder_inputs(rgb: npt.NDArray[np.uint8]) -> tuple[dict[str, npt.NDArray[Any]], tuple[int, int]]:
    padded, input_size = prepare_image(rgb)
    return {IMAGE: padded[None], INPUT_SIZE: np.array([input_size], dtype=np.int32)}, input_size


def _embedding_output(resp: pb.ModelInferResponse, model: str) -> npt.NDArray[np.float32]:
    """The ``image_embeddings`` output of a response as a (256, 64, 64) float32 array."""
    array = require_output(decode_infer_response(resp), IMAGE_EMBEDDINGS, model)
    if array.size != int(np.prod(EMBEDDING_SHAPE)) or array.dtype != np.float32:
        raise errors.ServerError(
            f"{model!r} returned image_embeddings {array.dtype}{list(array.shape)}, "
            "expected FP32[1,256,64,64]"
        )
    return array.reshape(EMBEDDING_SHAPE).astype(np.float32, copy=False)


def embed_op(
    config: ClientConfig,
    image: ImageInput,
    image_format: ImageFormat = "RGB",
    session_id: str | None = None,
) -> Op[ImageEmbedding]:
    """Preprocess and encode an image (``SamPredictor.set_image``'s work).

    With ``config.server_embeddings`` (the default) or a ``session_id``, the embedding stays on
    the server and the handle names it; otherwise it comes back inside the handle.
    """
    if session_id is not None:
        session_id = check_session_id(session_id)  # before decoding anything
    loaded = load_with_source(image, image_format, max_pixels=config.max_pixels)
    rgb = keep = loaded.rgb
    server_held = session_id is not None or config.server_embeddings
    if server_held and isinstance(image, np.ndarray) and np.may_share_memory(rgb, image):
        # The handle keeps the pixels to re-embed after an eviction: never the caller's own
        # array, which the caller may change afterwards.
        keep = rgb.copy()
        keep.flags.writeable = False
    return (yield from embed_rgb_op(config, rgb, session_id, keep=keep, source=loaded.source))


def embed_rgb_op(
    config: ClientConfig,
    rgb: npt.NDArray[np.uint8],
    session_id: str | None = None,
    *,
    keep: npt.NDArray[np.uint8] | None = None,
    source: bytes | None = None,
) -> Op[ImageEmbedding]:
    """:func:`embed_op` for an already loaded HxWx3 RGB array.

    ``keep`` is the image a server-held handle holds for re-embedding (default: ``rgb``);
    ``source`` the JPEG/PNG/WebP file ``rgb`` was decoded from, which a server-held embed may
    upload in its place (:mod:`~sam_triton.uploads`).
    """
    family = yield from family_op(config)
    if session_id is not None or config.server_embeddings:
        keep = rgb if keep is None else keep
        return (yield from _session_embed_op(config, rgb, session_id, keep, family, source))
    if family is not SAM1:
        return (yield from _embed_features_op(config, family, rgb))
    model = config.models.encoder
    inputs, input_size = encoder_inputs(rgb)
    request = build_infer_request(model, inputs, [IMAGE_EMBEDDINGS], model_version=config.models.version)
    (resp,) = yield [infer_call(config, request, f"embed via {model!r}")]
    emb = _embedding_output(resp, model)
    original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
    return ImageEmbedding(emb, original_size, input_size, model=model)


def _embed_features_op(
    config: ClientConfig, family: Family, rgb: npt.NDArray[np.uint8]
) -> Op[ImageEmbedding]:
    """Stateless embed of a family with more image features than the embedding (SAM 2: its
    two high-resolution maps too, 16 MiB in all, which then travel with each ``predict``)."""
    model = config.models.encoder
    names = list(family.encoder_outputs)
    request = build_infer_request(
        model, family_sam2.encoder_inputs(rgb), names, model_version=config.models.version
    )
    (resp,) = yield [infer_call(config, request, f"embed via {model!r}")]
    outputs = decode_infer_response(resp)
    features: dict[str, npt.NDArray[np.float32]] = {}
    for name, shape in family.features.items():
        array = require_output(outputs, name, model)
        if array.size != int(np.prod(shape)) or array.dtype != np.float32:
            raise errors.ServerError(
                f"{model!r} returned {name} {array.dtype}{list(array.shape)}, expected FP32{list(shape)}"
            )
        features[name] = array.reshape(shape).astype(np.float32, copy=False)
    embedding = features.pop(IMAGE_EMBEDDINGS)
    original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
    return ImageEmbedding(
        embedding, original_size, SQUARE_INPUT, family=family.name, features=features, model=model
    )


# --------------------------------------------------------------------------- server-held embeddings


def check_session_id(session_id: object, *, content_ids: bool = False) -> str:
    """A caller-given session id, validated the way ``sam_session`` will (InvalidInputError).

    1 to 256 printable ASCII characters (it also travels as a gRPC header), not starting
    with ``sha256:`` (reserved for content ids, which the client computes itself) unless
    ``content_ids`` allows naming one (lookups, handles).
    """
    if not isinstance(session_id, str):
        raise errors.InvalidInputError(f"session_id must be a str, got {type(session_id).__name__}")
    if not session_id:
        raise errors.InvalidInputError("session_id is empty; expected 1 to 256 printable ASCII characters")
    if len(session_id) > MAX_SESSION_ID_BYTES:
        raise errors.InvalidInputError(
            f"session_id is {len(session_id)} characters long; the limit is {MAX_SESSION_ID_BYTES}"
        )
    if not (session_id.isascii() and session_id.isprintable()):
        raise errors.InvalidInputError(
            f"session_id {session_id!r} must be printable ASCII (it is also sent as a gRPC header)"
        )
    if session_id.startswith(CONTENT_ID_PREFIX) and not content_ids:
        raise errors.InvalidInputError(
            f"session_id {session_id[:20]!r}...: the prefix {CONTENT_ID_PREFIX!r} is reserved for the "
            "content ids the client computes; leave session_id unset to use one"
        )
    return session_id


def _session_call(
    config: ClientConfig,
    session_id: str,
    inputs: dict[str, npt.NDArray[Any]],
    outputs: Sequence[str],
    what: str,
) -> Call:
    """A ``sam_session`` call: the id as the ``session_id`` tensor and as the routing header."""
    model = config.models.session
    tensors = {SESSION_ID: np.array([[session_id.encode()]], dtype=np.object_), **inputs}
    request = build_infer_request(model, tensors, outputs, model_version=config.models.version)
    return infer_call(config, request, f"{what} via {model!r}", ((SESSION_HEADER, session_id),))


def _session_step(config: ClientConfig, calls: list[Call]) -> Op[list[Any]]:
    """Yield ``calls``; a server without the session model gets an error that says what to do."""
    try:
        return (yield calls)
    except errors.ModelNotFoundError as exc:
        exc.message += (
            f" (the server has no {config.models.session!r} model for server-held embeddings: "
            "export the repository again, or use server_embeddings=False)"
        )
        exc.args = (exc.message,)
        raise


def _session_handle(
    config: ClientConfig,
    rgb: npt.NDArray[np.uint8],
    session_id: str,
    keep: npt.NDArray[np.uint8] | None,
    from_cache: bool,
    family: Family = SAM1,
) -> ImageEmbedding:
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    size = preprocess_shape(height, width) if family is SAM1 else SQUARE_INPUT
    return ImageEmbedding(
        None,
        (height, width),
        size,
        session_id,
        from_cache=from_cache,
        _image=keep,
        family=family.name,
        model=config.models.encoder,
    )


def session_lookup_op(config: ClientConfig, session_id: str) -> Op[bool]:
    """Whether the server holds an embedding under ``session_id`` (the id only is sent)."""
    check_session_id(session_id, content_ids=True)
    call = _session_call(config, session_id, {}, [CACHE_HIT], "lookup")
    (resp,) = yield from _session_step(config, [call])
    hit = require_output(decode_infer_response(resp), CACHE_HIT, config.models.session)
    return bool(hit.reshape(-1)[0]) if hit.size else False


def _session_upload_op(
    config: ClientConfig,
    session_id: str,
    rgb: npt.NDArray[np.uint8],
    family: Family = SAM1,
    source: bytes | None = None,
) -> Op[None]:
    """Send the image to be encoded and kept under ``session_id``; nothing big comes back.

    The image travels as a file when that is smaller (:func:`~sam_triton.uploads.encoded_upload`);
    a server whose decoder gives other pixels for it than ours (its content id disagrees) gets
    the pixels instead.
    """
    encoded = encoded_upload(rgb, family, source, config.image_upload)
    if encoded is not None:
        try:
            yield from _session_step(config, [_upload_call(config, session_id, {ENCODED_IMAGE: encoded})])
            return
        except errors.InvalidInputError as exc:
            if CONTENT_ID_MISMATCH not in str(exc):
                raise
    inputs = encoder_inputs(rgb)[0] if family is SAM1 else family_sam2.encoder_inputs(rgb)
    yield from _session_step(config, [_upload_call(config, session_id, inputs)])


def _upload_call(config: ClientConfig, session_id: str, inputs: dict[str, Any]) -> Call:
    if ENCODED_IMAGE in inputs:
        inputs = {ENCODED_IMAGE: np.array([[inputs[ENCODED_IMAGE]]], dtype=np.object_)}
    call = _session_call(config, session_id, inputs, [CACHE_HIT], "embed")
    # sam_session's queue defaults to clicks' level; an upload is foreground work.
    call.request.parameters["priority"].uint64_param = Priority.FOREGROUND
    return call


def _session_embed_op(
    config: ClientConfig,
    rgb: npt.NDArray[np.uint8],
    session_id: str | None,
    keep: npt.NDArray[np.uint8] | None,
    family: Family = SAM1,
    source: bytes | None = None,
) -> Op[ImageEmbedding]:
    """Embed into the server's cache.

    Content ids (the default) are looked up first, and the image is uploaded only when the
    server does not hold it. A caller-given id is always (re)bound to this image: the server
    cannot know that the id still names the same pixels, so it encodes the upload.
    """
    if session_id is None:
        session_id = content_id(rgb)
        if (yield from session_lookup_op(config, session_id)):
            return _session_handle(config, rgb, session_id, keep, True, family)
    yield from _session_upload_op(config, session_id, rgb, family, source)
    return _session_handle(config, rgb, session_id, keep, False, family)


def _recovering(config: ClientConfig, embedding: ImageEmbedding, calls: list[Call]) -> Op[list[Any]]:
    """Yield calls on a server-held embedding; on a cache miss re-embed once and send them again.

    Only a handle that still holds its image can recover; otherwise the miss is raised as
    :class:`~sam_triton.errors.EmbeddingNotFoundError`.
    """
    try:
        return (yield from _session_step(config, calls))
    except errors.EmbeddingNotFoundError:
        if embedding.session_id is None or embedding._image is None:
            raise
    family = family_named(embedding.family)
    yield from _session_upload_op(config, embedding.session_id, embedding._image, family)
    return (yield from _session_step(config, calls))


def fetch_embedding_op(config: ClientConfig, embedding: ImageEmbedding) -> Op[npt.NDArray[np.float32]]:
    """The (256, 64, 64) embedding array: the handle's own, or downloaded from the server."""
    if embedding.embedding is not None:
        return embedding.embedding
    if embedding.session_id is None:
        raise errors.InvalidInputError("this ImageEmbedding holds neither an embedding nor a session id")
    call = _session_call(config, embedding.session_id, {}, [IMAGE_EMBEDDINGS], "fetch embedding")
    (resp,) = yield from _recovering(config, embedding, [call])
    return _embedding_output(resp, config.models.session)


# --------------------------------------------------------------------------- prediction


def decoder_prompt_inputs(
    batch: Any, multimask_output: bool, *, mask_optional: bool = False
) -> dict[str, npt.NDArray[Any]]:
    """The prompt tensors of one request (batch dim 1 in front: the models have max_batch_size > 0).

    With ``mask_optional`` (``sam_session``) the 256 KiB ``mask_input`` and ``has_mask_input``
    are left out when no prompt carries a mask: the server implies zeros; prompts that refine
    a server-kept mask (:class:`~sam_triton.PreviousMask`) name it instead.
    """
    inputs = {
        "point_coords": batch.point_coords[None],
        "point_labels": batch.point_labels[None],
        "multimask_output": np.array([[multimask_output]], dtype=np.bool_),
    }
    if not mask_optional or bool(np.any(batch.has_mask_input)):
        inputs["mask_input"] = batch.mask_input[None]
        inputs["has_mask_input"] = batch.has_mask_input[None]
    if batch.refines_kept_masks:
        if not mask_optional:
            raise errors.InvalidInputError(
                "a PreviousMask names logits the server kept for a server-held embedding; here "
                "pass the logits themselves (Prediction.low_res_logits) as mask_input"
            )
        kept = batch.previous_masks
        inputs[REFINE_FROM] = np.array([[(m.prediction_id if m else "").encode() for m in kept]], np.object_)
        inputs[REFINE_MASK] = np.array([[m.index if m else 0 for m in kept]], np.int32)
    return inputs


@dataclass(frozen=True)
class _Target:
    """Where the prompts of one prediction go, and what identifies the image there."""

    model: str
    inputs: dict[str, npt.NDArray[Any]]
    metadata: Metadata = ()
    mask_optional: bool = False


def _embedding_inputs(config: ClientConfig, embedding: ImageEmbedding, family: Family = SAM1) -> _Target:
    """Decoder model and the tensors that identify the image for it - the one place that branches.

    An embedding array travels with the prompts to ``sam_decoder`` (stateless); a server-held
    handle sends its id to ``sam_session`` (with the routing header) and nothing else.
    ``family``: the served model's; a handle of another family is refused, never decoded.
    """
    if embedding.family != family.name:
        raise errors.InvalidInputError(
            f"this image embedding was made by a {embedding.family} model, but {config.models.encoder!r} "
            f"serves {family.name}: embed the image with this model"
        )
    if embedding.model is not None and embedding.model != config.models.encoder:
        # Same family, other weights (a server serving several models): its embedding would
        # decode into wrong masks without an error.
        raise errors.InvalidInputError(
            f"this image embedding was made by {embedding.model!r}, but this client uses "
            f"{config.models.encoder!r}: embed the image with this model"
        )
    if family is not SAM1 and embedding.embedding is not None:
        arrays = {IMAGE_EMBEDDINGS: embedding.embedding, **embedding.features}
        for name, shape in family.features.items():
            if name not in arrays or arrays[name].shape != shape:
                raise errors.InvalidInputError(f"this {family.name} embedding lacks {name} {list(shape)}")
        return _Target(config.models.decoder, {k: np.asarray(v, np.float32)[None] for k, v in arrays.items()})
    if embedding.embedding is not None:
        emb = np.asarray(embedding.embedding, dtype=np.float32)
        if emb.shape != EMBEDDING_SHAPE:
            raise errors.InvalidInputError(f"embedding has shape {emb.shape}; expected {EMBEDDING_SHAPE}")
        return _Target(config.models.decoder, {IMAGE_EMBEDDINGS: emb[None]})
    if embedding.session_id is None:
        raise errors.InvalidInputError("this ImageEmbedding holds neither an embedding nor a session id")
    session_id = check_session_id(embedding.session_id, content_ids=True)
    return _Target(
        config.models.session,
        {SESSION_ID: np.array([[session_id.encode()]], dtype=np.object_)},
        ((SESSION_HEADER, session_id),),
        mask_optional=True,
    )


def _low_res_output(outputs: dict[str, npt.NDArray[Any]], model: str, count: int) -> npt.NDArray[np.float32]:
    low = require_output(outputs, LOW_RES_MASKS, model).astype(np.float32, copy=False)
    if low.ndim < 3 or low.shape[-2:] != (LOW_RES_SIZE, LOW_RES_SIZE) or low.size % (count * LOW_RES_SIZE**2):
        raise errors.ServerError(
            f"{model!r} returned low_res_masks of shape {list(low.shape)} for {count} prompts"
        )
    return low.reshape(count, -1, LOW_RES_SIZE, LOW_RES_SIZE)


def _compact_output(
    outputs: dict[str, npt.NDArray[Any]], model: str, count: int, masks: int, original_size: tuple[int, int]
) -> npt.NDArray[Any]:
    """The encoded masks, (count, masks) bytes, each checked to be of ``original_size``."""
    encoded = require_output(outputs, MASKS, model)
    if encoded.size != count * masks:
        raise errors.ServerError(f"{model!r} returned {encoded.size} masks for {count} x {masks}")
    encoded = encoded.reshape(count, masks)
    for data in encoded.flat:
        try:
            shape = mask_shape(bytes(data))
        except ValueError as e:
            raise errors.ServerError(f"{model!r} returned an unreadable mask: {e}") from None
        if shape != tuple(original_size):
            raise errors.ServerError(f"{model!r} returned a {shape} mask for an image of {original_size}")
    return encoded


def decode_predictions(
    outputs: dict[str, npt.NDArray[Any]],
    model: str,
    count: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    return_logits: bool,
) -> list[Prediction]:
    """The predictions of one response: masks made here from the low-res logits, or (compact
    answers) the server's encoded masks, decoded on first use; logits and ids when sent."""
    iou = require_output(outputs, IOU_PREDICTIONS, model).astype(np.float32, copy=False)
    if iou.size % count:
        raise errors.ServerError(f"{model!r} returned {iou.size} scores for {count} prompts")
    iou = iou.reshape(count, -1)
    low = _low_res_output(outputs, model, count) if LOW_RES_MASKS in outputs else None
    if low is not None and iou.shape[1] != low.shape[1]:
        raise errors.ServerError(f"{model!r} returned {iou.shape[1]} scores for {low.shape[1]} masks")
    compact = MASKS in outputs and not return_logits
    encoded = _compact_output(outputs, model, count, iou.shape[1], original_size) if compact else None
    if encoded is None and low is None:
        low = _low_res_output(outputs, model, count)  # raises: the masks need the logits
    ids = outputs.get(PREDICTION_ID)
    if ids is not None and ids.size != count:
        raise errors.ServerError(f"{model!r} returned {ids.size} prediction ids for {count} prompts")
    predictions = []
    for p in range(count):
        logits = None if low is None else low[p].copy()
        kept = None if ids is None else bytes(ids.reshape(-1)[p]).decode()
        if encoded is not None:
            predictions.append(
                Prediction(
                    scores=iou[p].copy(),
                    low_res_logits=logits,
                    encoded_masks=tuple(encoded[p]),
                    prediction_id=kept,
                )
            )
            continue
        assert low is not None
        masks: npt.NDArray[np.bool_] | npt.NDArray[np.float32]
        if return_logits:
            masks = postprocess_masks(low[p], input_size, original_size)
        else:  # thresholded block by block: no full-size float logits
            masks = postprocess_to_masks(low[p], input_size, original_size)
        predictions.append(Prediction(masks, iou[p].copy(), logits, prediction_id=kept))
    return predictions


def _answer_outputs(
    config: ClientConfig, target: _Target, return_logits: bool, low_res_logits: bool
) -> tuple[list[str], bool]:
    """The outputs a prediction asks for, and whether its masks come from the server.

    Compact answers (``config.compact_answers``, server-held embeddings): the server's masks
    unless ``return_logits`` wants full-size logits (made here from the low-res ones), the
    logits only when asked for, and an id for each prompt's kept logits.
    """
    if not (target.mask_optional and config.compact_answers) or target.model in config.older_sessions:
        return [LOW_RES_MASKS, IOU_PREDICTIONS], False
    outputs = [IOU_PREDICTIONS, PREDICTION_ID]
    if return_logits or low_res_logits:
        outputs.append(LOW_RES_MASKS)
    if not return_logits:
        outputs.append(MASKS)
    return outputs, not return_logits


def _from_an_older_session_model(error: errors.InvalidInputError) -> bool:
    """Whether Triton refused a compact answer's tensors: a ``sam_session`` exported before
    compact answers existed (the SDK then asks it the way it did before)."""
    message = error.server_message or error.message
    compact = ((ORIGINAL_SIZE, "input"), (MASKS, "output"), (PREDICTION_ID, "output"))
    return any(f"unexpected inference {kind} '{name}'" in message for name, kind in compact)


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
    low_res_logits: bool = False,
) -> Op[Prediction | list[Prediction]]:
    """Decode prompts against an embedding; one request per group of equal-N prompts, concurrently.

    A refinement naming a kept mask the server no longer holds (a replica took the session over,
    or the mask was dropped to bound memory) makes that mask again from its prompt, once, and
    is sent again: like a re-embed, it costs time, never a wrong answer.
    """
    items, single = _prompt_list(config, prompts)
    family = yield from family_op(config)
    target = _embedding_inputs(config, embedding, family)
    model = target.model

    def calls(batches: list[PromptBatch]) -> list[Call]:
        outputs, server_masks = _answer_outputs(config, target, return_logits, low_res_logits)
        made = []
        for batch in batches:
            prompt_inputs = decoder_prompt_inputs(batch, multimask_output, mask_optional=target.mask_optional)
            inputs = {**target.inputs, **prompt_inputs}
            if server_masks:
                inputs[ORIGINAL_SIZE] = np.array([embedding.original_size], dtype=np.int32)
            request = build_infer_request(model, inputs, outputs, model_version=config.models.version)
            made.append(infer_call(config, request, f"predict via {model!r}", target.metadata))
        return made

    def send(items: list[Prompt]) -> Op[tuple[list[PromptBatch], list[Any]]]:
        encoded = encode_prompts(family, items, embedding.original_size)
        batches = group_by_points(encoded, config.max_prompts_per_request)
        if not embedding.server_held:
            return batches, (yield calls(batches))
        try:
            return batches, (yield from _recovering(config, embedding, calls(batches)))
        except errors.InvalidInputError as exc:
            if model in config.older_sessions or not _from_an_older_session_model(exc):
                raise
            config.older_sessions.add(model)  # remembered for the client's life
            return batches, (yield from _recovering(config, embedding, calls(batches)))

    try:
        batches, responses = yield from send(items)
    except errors.PredictionNotFoundError as exc:
        if PREDICTION_NOT_HELD not in (exc.server_message or ""):
            raise  # made on another image: making it again would refine another mask
        items = yield from _remade_kept_masks(config, embedding, items, exc)
        batches, responses = yield from send(items)
    results: list[Prediction | None] = [None] * len(items)
    for batch, resp in zip(batches, responses, strict=True):
        preds = decode_predictions(
            decode_infer_response(resp),
            model,
            len(batch.indices),
            embedding.input_size,
            embedding.original_size,
            return_logits,
        )
        for i, pred in zip(batch.indices, preds, strict=True):
            results[i] = pred.made_by(items[i], multimask_output) if pred.prediction_id else pred
    done = [r for r in results if r is not None]
    return done[0] if single else done


def _remade_kept_masks(
    config: ClientConfig, embedding: ImageEmbedding, items: list[Prompt], error: errors.SamTritonError
) -> Op[list[Prompt]]:
    """``items`` with every kept mask they name made again (its origin prompt predicted once
    more) under a fresh id; ``error`` when one has no origin to make it from."""
    fresh: dict[str, str] = {}
    remade = []
    for prompt in items:
        kept = prompt.previous_mask
        if kept is None:
            remade.append(prompt)
            continue
        if kept.origin is None:
            raise error
        if kept.prediction_id not in fresh:
            origin, multimask = kept.origin
            again = yield from predict_op(config, embedding, origin, multimask)
            assert isinstance(again, Prediction) and again.prediction_id is not None
            fresh[kept.prediction_id] = again.prediction_id
        mask = PreviousMask(fresh[kept.prediction_id], kept.index, kept.origin)
        remade.append(Prompt(prompt.point_coords, prompt.point_labels, prompt.box, mask_input=mask))
    return remade


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
    family = yield from family_op(config)
    encoded = encode_prompts(family, items, original_size)
    batches = group_by_points(encoded, config.max_prompts_per_request)
    if len(batches) > 1:
        embedding = yield from embed_rgb_op(config, rgb)
        return (yield from predict_op(config, embedding, prompts, multimask_output, return_logits))
    (batch,) = batches
    model = config.models.ensemble
    if family is SAM1:
        image_inputs, input_size = encoder_inputs(rgb)
    else:
        image_inputs, input_size = family_sam2.encoder_inputs(rgb), SQUARE_INPUT
    inputs = {**image_inputs, **decoder_prompt_inputs(batch, multimask_output)}
    request = build_infer_request(
        model, inputs, [LOW_RES_MASKS, IOU_PREDICTIONS], model_version=config.models.version
    )
    (resp,) = yield [infer_call(config, request, f"segment via {model!r}")]
    preds = decode_predictions(
        decode_infer_response(resp), model, len(items), input_size, original_size, return_logits
    )
    return preds[0] if single else preds

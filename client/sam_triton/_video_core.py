"""The sans-IO core of video tracking, shared by :class:`~sam_triton.VideoTracker`,
:class:`~sam_triton.AsyncVideoTracker` and :class:`~sam_triton.RemoteSam2VideoPredictor`.

Each operation is a generator like the rest of the SDK's (:mod:`sam_triton._core`): it
validates and encodes, yields one ``ModelStreamInfer`` :class:`~sam_triton._core.Call`, gets the
request's answer back and returns typed results. The trackers differ only in how they carry a
call: over a gRPC stream that the sync tracker reads on a thread and the asyncio one awaits.

A session is ``sam_video``'s: the server holds each object's memories, so a frame travels once
(as its own JPEG/PNG when that is smaller than the pixels) and each answer brings back only the
objects' masks, run-length or bit-packed (``sam_triton_common.mask_codec``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import (
    CLEAR_OLD_POINTS,
    ENCODED_IMAGE,
    FRAME_DROPPED,
    FRAME_INDEX,
    IMAGE,
    MASKS,
    NUM_FRAMES,
    OBJECT_ID,
    OBJECT_IDS,
    OBJECT_SCORES,
    SAM2,
    SESSION_HEADER,
    SESSION_ID,
    STREAM_ERROR_CODES,
    TRACK_MODE,
    TRACK_REVERSE,
    TRACK_START,
    VIDEO_BOX,
    VIDEO_FRAMES,
    VIDEO_LABELS,
    VIDEO_MASK,
    VIDEO_OP,
    VIDEO_OUTPUTS,
    VIDEO_POINTS,
    VIDEO_SIZE,
)
from sam_triton_common.mask_codec import decode_mask, encode_mask

from . import errors
from ._core import Call, Op, check_session_id
from ._tensors import build_infer_request, decode_infer_response, require_output
from .config import ClientConfig
from .images import ImageInput, load_with_source
from .proto import inference_pb2 as pb
from .uploads import encoded_upload

STREAM_METHOD = "ModelStreamInfer"
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TrackedFrame:
    """Every object's mask on one frame.

    ``obj_ids`` are the session's objects in the order they were added; ``masks`` (decoded on
    first use) is a (K, H, W) bool array in that order, ``object_scores`` each object's presence
    logit (> 0: the tracker sees it on this frame). A live frame the server dropped because its
    deadline passed first (``dropped``) has no masks. ``reprimed``: the server had lost the
    session before this answer and a tracker re-primed a new one from its prompts (see
    :class:`VideoSessionReprimedWarning`): this mask may differ from an unbroken session's.
    """

    frame_idx: int
    obj_ids: tuple[int, ...]
    encoded_masks: tuple[bytes, ...]
    object_scores: npt.NDArray[np.float32]
    size: tuple[int, int]
    dropped: bool = False
    reprimed: bool = False

    @cached_property
    def masks(self) -> BoolArray:
        if not self.encoded_masks:
            return np.zeros((0, *self.size), np.bool_)
        masks: BoolArray = np.stack([decode_mask(data) for data in self.encoded_masks])
        return masks

    def mask(self, obj_id: int) -> BoolArray:
        """The (H, W) mask of one object."""
        if obj_id not in self.obj_ids:
            raise errors.InvalidInputError(
                f"object {obj_id} is not tracked here (objects: {list(self.obj_ids)})"
            )
        if self.dropped:
            raise errors.InvalidInputError(f"frame {self.frame_idx} was dropped: it has no masks")
        mask: BoolArray = self.masks[self.obj_ids.index(obj_id)]
        return mask


class VideoSessionReprimedWarning(UserWarning):
    """A tracker's session was lost on the server (a replica restarted, or the session expired,
    was evicted or closed elsewhere) and the tracker opened a new one and re-sent the prompts it
    holds. The new session remembers the prompted frames only, not the frames tracked since, so
    the masks from then on may differ from the ones the lost session would have given."""


@dataclass
class VideoSession:
    """What a client knows of its ``sam_video`` session: its id, the frames' size, and (for
    :meth:`prompted_frames`) which frames carry prompts for which objects."""

    config: ClientConfig
    session_id: str = field(default_factory=lambda: f"video-{uuid.uuid4().hex}")
    size: tuple[int, int] | None = None
    num_frames: int | None = None
    prompts: dict[int, set[int]] = field(default_factory=dict)
    """obj_id -> the frames with prompts for it (what propagation starts from)."""
    closed: bool = False
    encoded_frame: int | None = None
    """The frame whose features the server holds (it keeps the last one it encoded): a prompt
    on it needs no upload."""

    def __post_init__(self) -> None:
        self.session_id = check_session_id(self.session_id)

    @property
    def model(self) -> str:
        return self.config.models.video

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The stream's headers: the session id, which a load balancer hashes on."""
        return ((SESSION_HEADER, self.session_id),)

    def first_prompted_frame(self) -> int:
        frames = [f for held in self.prompts.values() for f in held]
        if not frames:
            raise errors.InvalidInputError("no prompts: add points, a box or a mask on a frame first")
        return min(frames)


def stream_error(message: str, context: str) -> errors.SamTritonError:
    """The SDK error for an error answer on a stream (text only: ``sam_video`` puts its status
    first, ``"NOT_FOUND: ..."``)."""
    status, _, rest = message.partition(": ")
    code = STREAM_ERROR_CODES.get(status.split()[-1] if status else "", "UNKNOWN")
    return errors.from_status(code, rest if code != "UNKNOWN" else message, context=context)


# --------------------------------------------------------------------------- requests


def _call(session: VideoSession, op: str, inputs: dict[str, npt.NDArray[Any]], context: str) -> Call:
    if session.closed:
        raise errors.VideoSessionNotFoundError(f"{context}: this video session was closed")
    arrays = {
        SESSION_ID: np.array([session.session_id.encode()], np.object_),
        VIDEO_OP: np.array([op.encode()], np.object_),
        **inputs,
    }
    request = build_infer_request(
        session.model, arrays, list(VIDEO_OUTPUTS), model_version=session.config.models.version
    )
    return Call(STREAM_METHOD, request, f"{context} via {session.model!r}", session.metadata)


def _answer(session: VideoSession, response: pb.ModelInferResponse, context: str) -> list[TrackedFrame]:
    outputs = decode_infer_response(response)
    model = session.model
    frames = require_output(outputs, VIDEO_FRAMES, model).reshape(-1)
    ids = tuple(int(i) for i in require_output(outputs, OBJECT_IDS, model).reshape(-1))
    dropped = bool(require_output(outputs, FRAME_DROPPED, model).reshape(-1)[0])
    masks = require_output(outputs, MASKS, model)
    scores = require_output(outputs, OBJECT_SCORES, model).astype(np.float32)
    if not dropped and (masks.size != frames.size * len(ids) or scores.size != masks.size):
        raise errors.ServerError(
            f"{context}: {model!r} answered {masks.size} masks and {scores.size} scores for "
            f"{frames.size} frames of {len(ids)} objects"
        )
    assert session.size is not None
    masks = masks.reshape(frames.size, -1)
    scores = scores.reshape(frames.size, -1)
    return [
        TrackedFrame(
            int(frame),
            ids,
            tuple(bytes(m) for m in masks[f]) if not dropped else (),
            scores[f].copy() if not dropped else np.zeros(0, np.float32),
            session.size,
            dropped,
        )
        for f, frame in enumerate(frames)
    ]


def _frame_inputs(
    session: VideoSession, frame: ImageInput
) -> tuple[dict[str, npt.NDArray[Any]], tuple[int, int]]:
    """The frame as the smaller of its own file (or a PNG) and its pixels, and its size; a frame
    of another size than the session's is refused before anything is sent."""
    loaded = load_with_source(frame, "RGB", max_pixels=session.config.max_pixels)
    size = (int(loaded.rgb.shape[0]), int(loaded.rgb.shape[1]))
    if session.size is not None and size != session.size:
        raise errors.InvalidInputError(
            f"a frame of {size[0]}x{size[1]} in a video of {session.size[0]}x{session.size[1]} frames: "
            "every frame of a video has one size"
        )
    upload = encoded_upload(loaded.rgb, SAM2, loaded.source, session.config.image_upload)
    if upload is not None:
        return {ENCODED_IMAGE: np.array([upload], np.object_)}, size
    return {IMAGE: np.ascontiguousarray(loaded.rgb)}, size


def frame_size(session: VideoSession, frame: ImageInput) -> tuple[int, int]:
    """(H, W) of a frame (read, not sent)."""
    rgb = load_with_source(frame, "RGB", max_pixels=session.config.max_pixels).rgb
    return int(rgb.shape[0]), int(rgb.shape[1])


def _frame_index(frame_idx: int) -> npt.NDArray[np.int32]:
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, int | np.integer) or frame_idx < 0:
        raise errors.InvalidInputError(f"frame_idx must be an int >= 0, got {frame_idx!r}")
    return np.array([frame_idx], np.int32)


def _object_id(obj_id: int) -> npt.NDArray[np.int32]:
    if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer) or not -(2**31) <= obj_id < 2**31:
        raise errors.InvalidInputError(f"obj_id must be a 32-bit int, got {obj_id!r}")
    return np.array([obj_id], np.int32)


# --------------------------------------------------------------------------- operations


def open_op(session: VideoSession, size: tuple[int, int], num_frames: int | None = None) -> Op[None]:
    """Open the session for frames of ``size`` (a whole video of ``num_frames``, or a live stream)."""
    inputs = {VIDEO_SIZE: np.array(size, np.int32)}
    if num_frames is not None:
        inputs[NUM_FRAMES] = np.array([num_frames], np.int32)
    session.size, session.num_frames = size, num_frames
    yield [_call(session, "open", inputs, "open a video session")]
    session.prompts.clear()


def _ensure_open(
    session: VideoSession, frame: ImageInput | None, frame_idx: int | None = None
) -> Op[dict[str, npt.NDArray[Any]]]:
    """The frame's inputs, opening the session on its first frame; none without a frame, or
    for a request on the frame the server encoded last (``frame_idx``): it still holds its
    features."""
    if frame is not None and frame_idx is not None and frame_idx == session.encoded_frame:
        return {}
    if frame is None:
        if session.size is None:
            raise errors.InvalidInputError("the session has no frame yet: pass the frame this prompt is on")
        return {}
    inputs, size = _frame_inputs(session, frame)
    if session.size is None:
        yield from open_op(session, size, session.num_frames)
    return inputs


def track_op(
    session: VideoSession,
    frame: ImageInput,
    frame_idx: int,
    *,
    live: bool = True,
    reverse: bool = False,
    start: bool = False,
    deadline_s: float | None = None,
) -> Op[TrackedFrame]:
    """Track every object onto ``frame``. A live frame whose ``deadline_s`` passes before the
    server gets to it comes back ``dropped``."""
    index = _frame_index(frame_idx)
    inputs = yield from _ensure_open(session, frame, frame_idx)
    inputs |= {
        FRAME_INDEX: index,
        TRACK_MODE: np.array([b"live" if live else b"offline"], np.object_),
        TRACK_REVERSE: np.array([reverse], np.bool_),
        TRACK_START: np.array([start], np.bool_),
    }
    call = _call(session, "frame", inputs, f"track frame {frame_idx}")
    if deadline_s is not None:
        call.request.parameters["timeout"].int64_param = max(1, int(deadline_s * 1e6))
    response = yield from _sent(session, call, frame_idx)
    (tracked,) = _answer(session, response, call.context)
    if tracked.dropped:
        session.encoded_frame = None  # dropped before it was encoded
    return tracked


def _sent(session: VideoSession, call: Call, frame_idx: int) -> Op[Any]:
    """Send ``call``; afterwards the server holds ``frame_idx``'s features when it carried the
    frame (after an error, which frame it holds is unknown)."""
    session.encoded_frame = None if _carries_frame(call) else session.encoded_frame
    (response,) = yield [call]
    if _carries_frame(call):
        session.encoded_frame = frame_idx
    return response


def _carries_frame(call: Call) -> bool:
    return any(tensor.name in (IMAGE, ENCODED_IMAGE) for tensor in call.request.inputs)


def add_points_op(
    session: VideoSession,
    frame_idx: int,
    obj_id: int,
    points: npt.ArrayLike | None,
    labels: npt.ArrayLike | None,
    box: npt.ArrayLike | None = None,
    *,
    clear_old_points: bool = True,
    frame: ImageInput | None = None,
) -> Op[TrackedFrame]:
    """Points (x, y in the frame's pixels, labels 1/0) and/or a box (x0, y0, x1, y1) for an
    object on a frame; the answer is that frame with every object's mask."""
    inputs: dict[str, npt.NDArray[Any]] = {
        FRAME_INDEX: _frame_index(frame_idx),
        OBJECT_ID: _object_id(obj_id),
    }
    if points is None and box is None:
        raise errors.InvalidInputError("add_points needs points (with labels), a box, or both")
    if points is not None:
        coords = np.asarray(points, dtype=np.float32)
        if coords.ndim == 1 and coords.size == 2:
            coords = coords[None]
        flags = np.asarray([1] * len(coords) if labels is None else labels).reshape(-1)
        if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] != flags.size or not flags.size:
            raise errors.InvalidInputError(
                f"points must be (N, 2) with N labels, got {list(coords.shape)} and {flags.size} labels"
            )
        if not np.isin(flags, (0, 1)).all():
            raise errors.InvalidInputError("labels are 1 (foreground) or 0 (background)")
        inputs[VIDEO_POINTS] = np.ascontiguousarray(coords)
        inputs[VIDEO_LABELS] = flags.astype(np.int32)
    if box is not None:
        corners = np.asarray(box, dtype=np.float32).reshape(-1)
        if corners.size != 4:
            raise errors.InvalidInputError(f"box is (x0, y0, x1, y1), got {corners.size} values")
        inputs[VIDEO_BOX] = corners
    for name in (VIDEO_POINTS, VIDEO_BOX):
        if name in inputs and not np.isfinite(inputs[name]).all():
            raise errors.InvalidInputError(f"{name} contain NaN or infinite values")
    inputs[CLEAR_OLD_POINTS] = np.array([clear_old_points], np.bool_)
    inputs |= yield from _ensure_open(session, frame, frame_idx)
    return (
        yield from _prompt(
            session, "add_points", inputs, f"add points for object {obj_id}", obj_id, frame_idx
        )
    )


def add_mask_op(
    session: VideoSession,
    frame_idx: int,
    obj_id: int,
    mask: npt.ArrayLike,
    *,
    frame: ImageInput | None = None,
) -> Op[TrackedFrame]:
    """An object's (H, W) mask on a frame (nonzero: the object)."""
    inputs: dict[str, npt.NDArray[Any]] = {
        FRAME_INDEX: _frame_index(frame_idx),
        OBJECT_ID: _object_id(obj_id),
    }
    inputs |= yield from _ensure_open(session, frame, frame_idx)
    array = np.asarray(mask)
    if array.ndim != 2 or tuple(array.shape) != session.size:
        raise errors.InvalidInputError(f"mask must be (H, W) = {session.size}, got {list(array.shape)}")
    inputs[VIDEO_MASK] = np.array([encode_mask(array)], np.object_)
    return (
        yield from _prompt(session, "add_mask", inputs, f"add a mask for object {obj_id}", obj_id, frame_idx)
    )


def _prompt(
    session: VideoSession,
    op: str,
    inputs: dict[str, npt.NDArray[Any]],
    context: str,
    obj_id: int,
    frame_idx: int,
) -> Op[TrackedFrame]:
    call = _call(session, op, inputs, context)
    response = yield from _sent(session, call, frame_idx)
    session.prompts.setdefault(obj_id, set()).add(frame_idx)
    (tracked,) = _answer(session, response, call.context)
    return tracked


def clear_frame_op(session: VideoSession, frame_idx: int, obj_id: int) -> Op[TrackedFrame]:
    """Drop an object's prompts on one frame (the frame then comes back without them)."""
    inputs = {FRAME_INDEX: _frame_index(frame_idx), OBJECT_ID: _object_id(obj_id)}
    call = _call(session, "clear_frame", inputs, f"clear object {obj_id}'s prompts on frame {frame_idx}")
    (response,) = yield [call]
    session.prompts.get(obj_id, set()).discard(frame_idx)
    (tracked,) = _answer(session, response, call.context)
    return tracked


def remove_object_op(session: VideoSession, obj_id: int) -> Op[list[TrackedFrame]]:
    """Stop tracking an object; the answer: the frames with prompts, as they are without it."""
    call = _call(session, "remove_object", {OBJECT_ID: _object_id(obj_id)}, f"remove object {obj_id}")
    (response,) = yield [call]
    session.prompts.pop(obj_id, None)
    return _answer(session, response, call.context)


def reset_op(session: VideoSession) -> Op[None]:
    """Forget every object and memory; the session stays open for the same video."""
    yield [_call(session, "reset", {}, "reset the video session")]
    session.prompts.clear()


def close_op(session: VideoSession) -> Op[None]:
    """End the session on the server (its memory is freed at once)."""
    if session.size is None or session.closed:
        return  # never opened on the server, or closed already
    try:
        yield [_call(session, "close", {}, "close the video session")]
    finally:
        session.closed = True


def unwrap(response: pb.ModelStreamInferResponse, context: str) -> pb.ModelInferResponse:
    """A stream answer's inference response, or the SDK error it carries."""
    if response.error_message:
        raise stream_error(response.error_message, context)
    answer: pb.ModelInferResponse = response.infer_response
    return answer

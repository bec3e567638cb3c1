"""``sam_video``: SAM 2 video tracking sessions, held on the server, over a gRPC stream.

A decoupled Python-backend model: a client opens one ``ModelStreamInfer`` stream (with the
``sam-session-id`` header, so a load balancer in front of several replicas keeps a session's
stream on the replica holding its state) and sends requests; each is answered by exactly one
response, in the session's order. A request names its session (``session_id``) and one
operation (``video_op``):

- ``open`` (``video_size``, ``num_frames`` for a whole video): a new tracking state;
- ``frame`` (the frame as ``encoded_image`` or ``image``; ``mode`` live or offline, ``reverse``,
  ``start``): encode it through ``sam_encoder`` (BLS, batched with everyone's encodes) and track
  every object onto it;
- ``add_points`` (points and/or a box) / ``add_mask`` (``obj_id``, the prompt, and the frame's
  image unless it is the frame this session encoded last), ``remove_object``, ``clear_frame``,
  ``reset``, ``close``.

Frames are not kept: only the features of the frame encoded last (16 MiB, so a click on the
frame just tracked uploads no image), counted with the tracker's memory in the session's bytes.
Every answer carries its frames' indices, the session's object ids, their masks at the video's
size encoded by ``sam_triton_common.mask_codec`` (run lengths or bits: a few hundred bytes per
mask instead of H*W) and their presence scores. A live frame whose deadline (the request's KServe
``timeout``) passed before its turn is not tracked: its answer says ``dropped`` (counted in
``sam_video_frames_dropped_total``), so a stream that sends faster than the server tracks
keeps real time instead of building a backlog.

The tracking itself is the tracker core's (:mod:`sam_triton_server.backend.video_tracking`);
this module is the transport: sessions (:mod:`~sam_triton_server.backend.video_sessions`),
order and priorities (:mod:`~sam_triton_server.backend.video_lane`), checks, answers, metrics.
A gRPC stream reports errors as text only, so each error message starts with its status
(``"NOT_FOUND: ..."``, ``contract.STREAM_ERROR_CODES``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image
from sam_triton_common.contract import (
    CLEAR_OLD_POINTS,
    ENCODED_IMAGE,
    ENCODER_MODEL,
    FRAME_DROPPED,
    FRAME_INDEX,
    IMAGE,
    MASKS,
    MAX_SESSION_ID_BYTES,
    NUM_FRAMES,
    OBJECT_ID,
    OBJECT_IDS,
    OBJECT_SCORES,
    SAM2,
    SESSION_ID,
    TRACK_MODE,
    TRACK_REVERSE,
    TRACK_START,
    VIDEO_BOX,
    VIDEO_FRAMES,
    VIDEO_LABELS,
    VIDEO_MASK,
    VIDEO_OP,
    VIDEO_OPS,
    VIDEO_POINTS,
    VIDEO_SESSION_NOT_FOUND,
    VIDEO_SIZE,
)
from sam_triton_common.images import DEFAULT_MAX_PIXELS, check_size
from sam_triton_common.mask_codec import decode_mask, encode_mask

from sam_triton_server.backend.metrics import VideoMetrics
from sam_triton_server.backend.models._common import (
    Array,
    DeadlinePassed,
    InvalidInput,
    NotFound,
    OnnxModelBase,
    Unavailable,
    int_parameter,
)
from sam_triton_server.backend.uploads import decode_upload
from sam_triton_server.backend.video_lane import LIVE, OFFLINE, PROMPT, LaneFull, VideoLane
from sam_triton_server.backend.video_sessions import SessionLimit, VideoSessionStore
from sam_triton_server.backend.video_tracking import (
    FrameFeatures,
    FrameResult,
    TrackerError,
    TrackerGraphs,
    VideoTrackerState,
)

OVERLOADED_PREFIX = "sam_video overloaded"


@dataclass
class VideoSession:
    """One video's tracking state and what the transport checks against: the frames' size,
    where the current propagation (or live stream) stands, the frame encoded last."""

    state: VideoTrackerState
    size: tuple[int, int]
    last_frame: int | None = None
    encoded: tuple[int, FrameFeatures] | None = None

    @property
    def nbytes(self) -> int:
        held = 0 if self.encoded is None else sum(int(a.nbytes) for a in _arrays(self.encoded[1]))
        return int(self.state.nbytes) + held

    def __len__(self) -> int:
        return len(self.state.obj_ids)


def _arrays(features: FrameFeatures) -> tuple[Array, ...]:
    return (features.image_embeddings, features.high_res_feats_0, features.high_res_feats_1)


@dataclass(frozen=True)
class Answer:
    """What one response says: frames (each with every object's mask and score)."""

    frames: tuple[int, ...]
    obj_ids: tuple[int, ...]
    masks: tuple[tuple[bytes, ...], ...] = ()
    scores: tuple[tuple[float, ...], ...] = ()
    dropped: bool = False


class TritonPythonModel(OnnxModelBase):
    """Dispatches each request to the video lane, whose workers answer them."""

    def setup(self) -> None:
        self.max_image_pixels = int_parameter(self.params, "max_image_pixels", DEFAULT_MAX_PIXELS)
        self.encoder_model = self.params.get("encoder_model", ENCODER_MODEL)
        self.graphs = TrackerGraphs.load(self.version_dir, lambda path: self.create_session(str(path)))
        self.sessions: VideoSessionStore[VideoSession] = VideoSessionStore(
            max_sessions=int_parameter(self.params, "max_sessions", 16),
            max_bytes=int_parameter(self.params, "max_bytes", 1 << 30),
            ttl_seconds=float(int_parameter(self.params, "ttl_seconds", 600)),
        )
        self.lane = VideoLane(
            workers=int_parameter(self.params, "video_workers", 1),
            max_pending=int_parameter(self.params, "video_queue_size", 64),
        )
        self.metrics = VideoMetrics(self.pb, self.name)

    # -- dispatch ----------------------------------------------------------------------------

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            arrived = time.monotonic()
            try:
                session_id = self._session_id(request)
                op = self._op(request)
                job = partial(self._job, request, session_id, op, arrived)
                self.lane.submit(session_id, self._priority(request, op), job)
            except LaneFull as e:
                self._send(request, self.error_for(Unavailable(f"{OVERLOADED_PREFIX}: {e}; retry later")))
            except Exception as e:  # an unreadable request; never take the server down
                self._send(request, self.error_for(e))
        return None

    def finalize(self) -> None:
        self.lane.shutdown()
        super().finalize()

    def _priority(self, request: Any, op: str) -> int:
        if op != "frame":
            return PROMPT
        return LIVE if self._live(request) else OFFLINE

    def _job(self, request: Any, session_id: str, op: str, arrived: float) -> bool:
        """On a lane worker: do ``op`` and answer the request (an error answers it too).
        False when no work was done (a live frame dropped as late): the session keeps its turn."""
        worked = True
        try:
            answer = self._do(request, session_id, op, arrived)
            worked = not answer.dropped
            # Prompts grow a session as frames do (a conditioning frame's memory, new objects).
            for evicted in self.sessions.fit(session_id):
                self.logger.warning(f"video session {evicted!r} evicted: sessions over max_bytes")
            response = self._respond(answer)
        except SessionLimit as e:
            response = self.error_for(Unavailable(f"{OVERLOADED_PREFIX}: {e}"))
        except TrackerError as e:
            response = self.error_for(InvalidInput(str(e)))
        except Exception as e:
            response = self.error_for(e)
        self._send(request, response)
        return worked

    def _send(self, request: Any, response: Any) -> None:
        self.metrics.publish(self.sessions)  # before the answer: a client that then scrapes sees it
        request.get_response_sender().send(response, flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _error(self, message: str, code_name: str) -> Any:
        """The status first: a stream carries an error's text, not its code."""
        return super()._error(f"{code_name}: {message}", code_name)

    # -- operations --------------------------------------------------------------------------

    def _do(self, request: Any, session_id: str, op: str, arrived: float) -> Answer:
        if op == "open":
            height, width = self._video_size(request)
            frames = self._int(request, NUM_FRAMES, None)
            if frames is not None and frames < 1:
                raise InvalidInput(f"{NUM_FRAMES} must be >= 1, got {frames}")
            state = VideoTrackerState(self.graphs, (height, width), num_frames=frames)
            self.sessions.open(session_id, VideoSession(state, (height, width)))
            return Answer((), ())
        if op == "close":
            if not self.sessions.close(session_id):
                raise self._not_found(session_id)
            return Answer((), ())
        session = self.sessions.get(session_id)
        if session is None:
            raise self._not_found(session_id)
        if op == "reset":
            session.state.reset()
            session.last_frame = None
            return Answer((), ())
        frame_idx = self._int(request, FRAME_INDEX, None)
        if op == "remove_object":
            results = session.state.remove_object(self._object_id(request))
            return self._answer(session, results)
        if frame_idx is None or frame_idx < 0:
            raise InvalidInput(f"{op} needs {FRAME_INDEX} >= 0, got {frame_idx}")
        if op == "frame":
            return self._track(request, session_id, session, frame_idx, arrived)
        if op == "clear_frame":
            result = session.state.clear_prompts_in_frame(frame_idx, self._object_id(request))
            return self._answer(session, [result])
        obj_id = self._object_id(request)
        if op == "add_mask":
            mask = self._mask(request, session)
            features = self._features(request, session, frame_idx, arrived)
            return self._answer(session, [session.state.add_mask(frame_idx, obj_id, mask, features)])
        points, labels, box = self._prompt(request)
        features = self._features(request, session, frame_idx, arrived)
        result = session.state.add_points(
            frame_idx, obj_id, points, labels, features, clear_old_points=self._clear(request), box=box
        )
        return self._answer(session, [result])

    def _track(
        self, request: Any, session_id: str, session: VideoSession, frame_idx: int, arrived: float
    ) -> Answer:
        live, reverse = self._live(request), self._bool(request, TRACK_REVERSE, False)
        last = None if self._bool(request, TRACK_START, False) else session.last_frame
        if last is not None and (frame_idx >= last if reverse else frame_idx <= last):
            raise InvalidInput(
                f"frame {frame_idx} is out of order: this {'stream' if live else 'propagation'} "
                f"tracked frame {last} last, so the next frame comes {'before' if reverse else 'after'} "
                "it (a new propagation starts anywhere)"
            )
        timeout_us = int(request.timeout())
        try:
            if live and timeout_us and time.monotonic() - arrived > timeout_us / 1e6:
                raise DeadlinePassed("before its turn")
            features = self._features(request, session, frame_idx, arrived)
        except DeadlinePassed:
            if not live:
                raise
            # Late, here or in sam_encoder's queue: dropped, and later frames still come after it.
            session.last_frame = frame_idx
            self.metrics.dropped()
            return Answer((frame_idx,), session.state.obj_ids, dropped=True)
        session.last_frame = frame_idx
        if not session.state.obj_ids:  # nothing to track yet: the frame is held for a first click
            return Answer((frame_idx,), ())
        result = session.state.track_frame(frame_idx, features, reverse=reverse)
        self.metrics.tracked(time.monotonic() - arrived)
        return self._answer(session, [result])

    def _features(self, request: Any, session: VideoSession, frame_idx: int, arrived: float) -> FrameFeatures:
        """The frame's features: the request's image encoded through sam_encoder, or the ones
        this session encoded last when they are this frame's and no image came (a click on the
        frame just tracked, a propagation starting on the frame just clicked)."""
        rgb = self._frame(request, session)
        if rgb is None:
            if session.encoded is not None and session.encoded[0] == frame_idx:
                return session.encoded[1]
            raise InvalidInput(
                f"frame {frame_idx} is not the frame this session encoded last: send the frame "
                f"({ENCODED_IMAGE} or {IMAGE}) with the request"
            )
        timeout_us = int(request.timeout())
        left_us = 0 if not timeout_us else max(1, timeout_us - int((time.monotonic() - arrived) * 1e6))
        outputs = self.encode_features_via_bls(
            self.encoder_model, {IMAGE: self._square(rgb)[None]}, SAM2.encoder_outputs, timeout_us=left_us
        )
        features = FrameFeatures.from_outputs(outputs)
        session.encoded = (frame_idx, features)
        return features

    def _square(self, rgb: Array) -> Array:
        """The frame as SAM2VideoPredictor loads it: resized to the model's square by Pillow
        (its default filter) before anything else, unlike a still image, which the encoder
        resizes itself (here it then keeps the square as it is)."""
        side = int(self.graphs.config.image_size)
        return np.asarray(Image.fromarray(rgb).resize((side, side)), dtype=np.uint8)

    def _answer(self, session: VideoSession, results: list[FrameResult]) -> Answer:
        """The tracker's frame results as the wire's: masks encoded at the video's size."""
        masks, scores = [], []
        for result in results:
            frame_masks = result.masks()
            if frame_masks.shape[1:] != session.size:
                raise RuntimeError(
                    f"the tracker made {frame_masks.shape[1:]} masks for {session.size} frames"
                )
            masks.append(tuple(encode_mask(m) for m in frame_masks))
            scores.append(tuple(float(s) for s in np.asarray(result.object_scores).reshape(-1)))
        frames = tuple(int(r.frame_idx) for r in results)
        return Answer(frames, tuple(session.state.obj_ids), tuple(masks), tuple(scores))

    def _respond(self, answer: Answer) -> Any:
        count, objects = len(answer.frames), len(answer.obj_ids)
        masks = np.empty((count, objects), np.object_)
        for f, row in enumerate(answer.masks):
            masks[f, : len(row)] = row
        scores = (
            np.array(answer.scores, np.float32).reshape(len(answer.scores), -1) if answer.scores else None
        )
        return self.respond(
            {
                VIDEO_FRAMES: np.array(answer.frames, np.int32).reshape(-1),
                OBJECT_IDS: np.array(answer.obj_ids, np.int32).reshape(-1),
                MASKS: masks if not answer.dropped else np.empty((count, 0), np.object_),
                OBJECT_SCORES: scores if scores is not None else np.zeros((count, 0), np.float32),
                FRAME_DROPPED: np.array([answer.dropped], np.bool_),
            }
        )

    # -- inputs ------------------------------------------------------------------------------

    def _not_found(self, session_id: str) -> NotFound:
        return NotFound(
            f"{VIDEO_SESSION_NOT_FOUND}: {session_id!r} ({self.sessions.why_gone(session_id)}; "
            f"{len(self.sessions)} sessions open here): open a new session and prompt again"
        )

    def _frame(self, request: Any, session: VideoSession) -> Array | None:
        """The request's frame as HxWx3 RGB (a file is decoded here), or None; of the session's size."""
        encoded = self.pb.get_input_tensor_by_name(request, ENCODED_IMAGE)
        if encoded is not None:
            rgb = decode_upload(encoded.as_numpy(), "", self.max_image_pixels)
        else:
            tensor = self.pb.get_input_tensor_by_name(request, IMAGE)
            if tensor is None:
                return None
            rgb = tensor.as_numpy()
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise InvalidInput(f"{IMAGE} must be UINT8 [H, W, 3], got {rgb.dtype}{list(rgb.shape)}")
        if tuple(rgb.shape[:2]) != session.size:
            raise InvalidInput(
                f"a frame of {rgb.shape[0]}x{rgb.shape[1]} in a session of "
                f"{session.size[0]}x{session.size[1]} frames: every frame of a video has the size "
                "the session was opened with"
            )
        return np.ascontiguousarray(rgb)

    def _video_size(self, request: Any) -> tuple[int, int]:
        size = self.input(request, VIDEO_SIZE).reshape(-1)
        if size.size != 2:
            raise InvalidInput(f"{VIDEO_SIZE} holds (height, width), got {size.size} values")
        height, width = int(size[0]), int(size[1])
        if min(height, width) < 2:
            raise InvalidInput(f"{VIDEO_SIZE} {height}x{width}: frames have at least 2 pixels on each side")
        check_size(height, width, self.max_image_pixels)
        return height, width

    def _prompt(self, request: Any) -> tuple[Array | None, Array | None, Array | None]:
        """(points, labels, box) of an add_points request: points and labels together, a box, or both."""
        has_points = self.pb.get_input_tensor_by_name(request, VIDEO_POINTS) is not None
        box_tensor = self.pb.get_input_tensor_by_name(request, VIDEO_BOX)
        if not has_points and box_tensor is None:
            raise InvalidInput(
                f"add_points takes {VIDEO_POINTS} (with {VIDEO_LABELS}), a {VIDEO_BOX}, or both"
            )
        points = labels = box = None
        if has_points:
            points = self.input(request, VIDEO_POINTS).astype(np.float32)
            labels = self.input(request, VIDEO_LABELS).reshape(-1).astype(np.int32)
            if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] != labels.size or not labels.size:
                raise InvalidInput(
                    f"{VIDEO_POINTS} [N, 2] and {VIDEO_LABELS} [N] with N >= 1, got "
                    f"{list(points.shape)} and {labels.size} labels"
                )
            if not np.isin(labels, (0, 1)).all():
                raise InvalidInput(f"{VIDEO_LABELS} are 1 (foreground) or 0 (background)")
        if box_tensor is not None:
            box = box_tensor.as_numpy().astype(np.float32).reshape(-1)
            if box.size != 4:
                raise InvalidInput(f"{VIDEO_BOX} holds (x0, y0, x1, y1), got {box.size} values")
        for name, values in ((VIDEO_POINTS, points), (VIDEO_BOX, box)):
            if values is not None and not np.isfinite(values).all():
                raise InvalidInput(f"{name} contains NaN or infinite values")
        return points, labels, box

    def _mask(self, request: Any, session: VideoSession) -> Array:
        data = self.input(request, VIDEO_MASK).reshape(-1)
        if data.size != 1 or not isinstance(data[0], bytes):
            raise InvalidInput(f"{VIDEO_MASK} holds one encoded mask")
        try:
            mask = decode_mask(data[0])
        except ValueError as e:
            raise InvalidInput(f"{VIDEO_MASK}: {e}") from None
        if mask.shape != session.size:
            raise InvalidInput(
                f"a {mask.shape[0]}x{mask.shape[1]} {VIDEO_MASK} in a session of "
                f"{session.size[0]}x{session.size[1]} frames"
            )
        return mask

    def _object_id(self, request: Any) -> int:
        obj_id = self._int(request, OBJECT_ID, None)
        if obj_id is None:
            raise InvalidInput(f"missing input tensor {OBJECT_ID!r}")
        return int(obj_id)

    def _live(self, request: Any) -> bool:
        mode = self._text(request, TRACK_MODE, "live")
        if mode not in ("live", "offline"):
            raise InvalidInput(f"{TRACK_MODE} is live or offline, got {mode!r}")
        return mode == "live"

    def _clear(self, request: Any) -> bool:
        return self._bool(request, CLEAR_OLD_POINTS, True)

    def _session_id(self, request: Any) -> str:
        text = self._text(request, SESSION_ID, "")
        if not text or len(text.encode()) > MAX_SESSION_ID_BYTES:
            raise InvalidInput(f"{SESSION_ID} must be 1..{MAX_SESSION_ID_BYTES} bytes of UTF-8")
        return str(text)

    def _op(self, request: Any) -> str:
        op = self._text(request, VIDEO_OP, "")
        if op not in VIDEO_OPS:
            raise InvalidInput(f"{VIDEO_OP} is one of {', '.join(VIDEO_OPS)}, got {op!r}")
        return str(op)

    def _scalar(self, request: Any, name: str) -> Any:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        raw = tensor.as_numpy().reshape(-1)
        if raw.size != 1:
            raise InvalidInput(f"{name} holds exactly one value, got {raw.size}")
        return raw[0]

    def _text(self, request: Any, name: str, default: str) -> str:
        value = self._scalar(request, name)
        if value is None:
            return default
        try:
            return value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise InvalidInput(f"{name} must be UTF-8 text") from None

    def _int(self, request: Any, name: str, default: int | None) -> int | None:
        value = self._scalar(request, name)
        return default if value is None else int(value)

    def _bool(self, request: Any, name: str, default: bool) -> bool:
        value = self._scalar(request, name)
        return default if value is None else bool(value)

"""Live video tracking: :class:`VideoTracker` (blocking) and :class:`AsyncVideoTracker`
(asyncio), one ``sam_video`` session each, over one gRPC stream.

    with VideoTracker("localhost:8001", frame_deadline=0.5) as tracker:
        tracker.track(first_frame)                         # frame 0
        tracker.add_points(0, obj_id=1, points=[[210, 350]], labels=[1])
        for frame in camera:                               # frames 1, 2, ...
            result = tracker.track(frame)                  # result.masks: (objects, H, W)

Frames and prompts go out in order on the session's stream and each gets one answer (the
:class:`~sam_triton.TrackedFrame` of its frame). A live frame the server could not start
within ``frame_deadline`` seconds comes back ``dropped`` instead of delaying the frames after
it. Both trackers run the same operations (:mod:`sam_triton._video_core`); they differ only in
how they wait for an answer.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio
import numpy.typing as npt

from . import _core, _video_core, errors
from ._core import Call, Op
from ._video_core import TrackedFrame, VideoSession, VideoSessionReprimedWarning
from .aio import AsyncSamClient
from .client import SamClient
from .config import ClientConfig
from .images import ImageInput
from .predictor import ClientOwner
from .proto import inference_pb2 as pb

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from .config import ClientOptions

T = TypeVar("T")
_END = None


def _lost(exc: grpc.RpcError, context: str) -> errors.SamTritonError:
    error = errors.from_rpc_error(exc, context=context)
    error.message += (
        " (the video stream broke; the next call opens a new one: the session lives on the server)"
    )
    error.args = (error.message,)
    return error


class _Stream:
    """One ``ModelStreamInfer`` stream of a sync client: requests queued to gRPC's sender, answers
    read on gRPC's own thread into a queue, so a wait can time out."""

    def __init__(self, client: SamClient, metadata: tuple[tuple[str, str], ...]) -> None:
        self._client = client
        self._metadata = client.config.call_metadata() + metadata
        self._requests: queue.Queue[pb.ModelInferRequest | None] | None = None
        self._answers: queue.Queue[Any] = queue.Queue()
        self._call: Any = None

    def _open(self) -> None:
        requests: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()
        answers: queue.Queue[Any] = queue.Queue()
        call = self._client._stub.ModelStreamInfer(iter(requests.get, _END), metadata=self._metadata)

        def read() -> None:
            try:
                for answer in call:
                    answers.put(answer)
            except grpc.RpcError as exc:
                answers.put(exc)
            answers.put(_END)

        threading.Thread(target=read, name="sam-video-stream", daemon=True).start()
        self._requests, self._answers, self._call = requests, answers, call

    def execute(self, calls: Sequence[Call]) -> list[Any]:
        results = []
        for call in calls:
            if self._requests is None:
                self._open()
            assert self._requests is not None
            self._requests.put(call.request)
            try:
                answer = self._answers.get(timeout=self._client.config.timeout)
            except queue.Empty:
                self.close()  # its answer would arrive as the next call's: start afresh
                raise errors.DeadlineExceededError(
                    f"{call.context}: no answer within {self._client.config.timeout}s",
                    code="DEADLINE_EXCEEDED",
                ) from None
            if isinstance(answer, grpc.RpcError) or answer is _END:
                self._requests = None
                _core.observe(self._client.config, call, None)
                if answer is _END:
                    raise errors.ServerUnavailableError(f"{call.context}: the server ended the video stream")
                raise _lost(answer, call.context) from answer
            _core.observe(self._client.config, call, answer)
            results.append(_video_core.unwrap(answer, call.context))
        return results

    def close(self) -> None:
        if self._requests is not None:
            self._requests.put(_END)
            self._call.cancel()
            self._requests = None


class _AsyncStream:
    """:class:`_Stream` for grpc.aio: the stream's reads are awaited."""

    def __init__(self, client: AsyncSamClient, metadata: tuple[tuple[str, str], ...]) -> None:
        self._client = client
        self._metadata = client.config.call_metadata() + metadata
        self._call: Any = None

    async def execute(self, calls: Sequence[Call]) -> list[Any]:
        results = []
        for call in calls:
            if self._call is None:
                self._call = self._client._get_stub().ModelStreamInfer(metadata=self._metadata)
            try:
                await self._call.write(call.request)
                answer = await asyncio.wait_for(self._call.read(), self._client.config.timeout)
            except TimeoutError:
                self.close()
                raise errors.DeadlineExceededError(
                    f"{call.context}: no answer within {self._client.config.timeout}s",
                    code="DEADLINE_EXCEEDED",
                ) from None
            except grpc.RpcError as exc:
                self._call = None
                _core.observe(self._client.config, call, None)
                raise _lost(exc, call.context) from exc
            if answer is grpc.aio.EOF:
                self._call = None
                raise errors.ServerUnavailableError(f"{call.context}: the server ended the video stream")
            _core.observe(self._client.config, call, answer)
            results.append(_video_core.unwrap(answer, call.context))
        return results

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


@dataclass(frozen=True)
class _Prompt:
    """A prompt the tracker sent, kept to re-prime a lost session: what it was for, the frame it
    was on (as the caller gave it) and how to send it again."""

    frame_idx: int
    obj_id: int
    frame: ImageInput | None
    send: Callable[[ImageInput | None], Op[TrackedFrame]]


class _Tracking:
    """What both trackers hold: the session, the next live frame's index, the frame deadline,
    the prompts (and the frames they are on) for re-priming; and the operations they run.

    Re-priming: when the server answers that it does not hold the session (any more) and
    ``reprime`` is on, the operation is done again after :meth:`_reprime` opened the session
    anew and re-sent every prompt in the order they were first sent; that answer and all after
    it say ``reprimed``."""

    def __init__(self, config: ClientConfig, frame_deadline: float | None, reprime: bool) -> None:
        self.session = VideoSession(config)
        self.frame_deadline = self.deadline(frame_deadline)
        self.next_frame = 0
        self.reprime = reprime
        self.reprimes = 0
        self.prompts: list[_Prompt] = []
        self.last: tuple[int, ImageInput] | None = None
        """The last frame tracked (not dropped): a prompt on it sends no frame, but a re-prime does."""

    @staticmethod
    def deadline(seconds: float | None) -> float | None:
        if seconds is not None and not seconds > 0:
            raise errors.InvalidInputError(f"frame_deadline must be > 0 seconds or None, got {seconds!r}")
        return seconds

    def _surviving(self, op: Callable[[], Op[T]]) -> Op[T]:
        """``op()``, done again on a re-primed session when the server lost this one."""
        try:
            result = yield from op()
        except errors.VideoSessionNotFoundError as lost:
            if not self.reprime or self.session.closed or self.session.size is None:
                raise
            yield from self._reprime(lost)
            result = yield from op()
        return self._flagged(result) if self.reprimes else result

    @staticmethod
    def _flagged(result: T) -> T:
        if isinstance(result, TrackedFrame):
            flagged: T = replace(result, reprimed=True)
            return flagged
        if isinstance(result, list):
            return [replace(r, reprimed=True) for r in result]  # type: ignore[return-value]
        return result

    def _reprime(self, lost: errors.VideoSessionNotFoundError) -> Op[None]:
        session = self.session
        assert session.size is not None
        warnings.warn(
            VideoSessionReprimedWarning(
                f"video session {session.session_id!r} was lost on the server ({lost.message}); "
                f"re-opened and re-primed from the {len(self.prompts)} prompt(s) this tracker holds: "
                "masks from here on may differ from the lost session's (it remembered the frames "
                "tracked since the prompts, the new one does not)"
            ),
            stacklevel=4,
        )
        self.reprimes += 1
        session.encoded_frame = None
        yield from _video_core.open_op(session, session.size, session.num_frames)
        for prompt in self.prompts:
            yield from prompt.send(prompt.frame)

    def track(self, frame: ImageInput, frame_idx: int | None) -> Op[TrackedFrame]:
        index = self.next_frame if frame_idx is None else frame_idx
        tracked = yield from self._surviving(
            lambda: _video_core.track_op(self.session, frame, index, deadline_s=self.frame_deadline)
        )
        self.next_frame = tracked.frame_idx + 1
        if not tracked.dropped:
            self.last = (tracked.frame_idx, frame)
        return tracked

    def prompt(
        self,
        frame_idx: int,
        obj_id: int,
        frame: ImageInput | None,
        send: Callable[[ImageInput | None], Op[TrackedFrame]],
    ) -> Op[TrackedFrame]:
        """A prompt on ``frame_idx`` (``frame``: the caller's, else the last frame tracked when it
        is that one), kept for re-priming once the server took it."""
        if frame is None and self.last is not None and self.last[0] == frame_idx:
            frame = self.last[1]
        tracked = yield from self._surviving(lambda: send(frame))
        self.prompts.append(_Prompt(frame_idx, obj_id, frame, send))
        return tracked

    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: npt.ArrayLike | None,
        labels: npt.ArrayLike | None,
        box: npt.ArrayLike | None,
        clear_old_points: bool,
        frame: ImageInput | None,
    ) -> Op[TrackedFrame]:
        def send(on: ImageInput | None) -> Op[TrackedFrame]:
            return _video_core.add_points_op(
                self.session,
                frame_idx,
                obj_id,
                points,
                labels,
                box,
                clear_old_points=clear_old_points,
                frame=on,
            )

        return self.prompt(frame_idx, obj_id, frame, send)

    def add_mask(
        self, frame_idx: int, obj_id: int, mask: npt.ArrayLike, frame: ImageInput | None
    ) -> Op[TrackedFrame]:
        def send(on: ImageInput | None) -> Op[TrackedFrame]:
            return _video_core.add_mask_op(self.session, frame_idx, obj_id, mask, frame=on)

        return self.prompt(frame_idx, obj_id, frame, send)

    def clear_prompts(self, frame_idx: int, obj_id: int) -> Op[TrackedFrame]:
        tracked = yield from self._surviving(
            lambda: _video_core.clear_frame_op(self.session, frame_idx, obj_id)
        )
        self.prompts = [p for p in self.prompts if (p.frame_idx, p.obj_id) != (frame_idx, obj_id)]
        return tracked

    def remove_object(self, obj_id: int) -> Op[list[TrackedFrame]]:
        frames = yield from self._surviving(lambda: _video_core.remove_object_op(self.session, obj_id))
        self.prompts = [p for p in self.prompts if p.obj_id != obj_id]
        return frames

    def reset(self) -> Op[None]:
        yield from self._surviving(lambda: _video_core.reset_op(self.session))
        self.prompts.clear()


class VideoTracker(ClientOwner):
    """A live tracking session (blocking; thread-safe only from one thread at a time).

    Args:
        client: ``"host:port"``, or a :class:`~sam_triton.SamClient` to share.
        frame_deadline: seconds a live frame may wait on the server before it is dropped
            (None: never dropped).
        reprime: when the server has lost the session (a replica restarted, the session
            expired or was evicted), open a new one, re-send the prompts this tracker holds and
            go on, with a :class:`~sam_triton.VideoSessionReprimedWarning` and every answer from
            then on ``reprimed`` (its masks may differ from the lost session's). False: raise
            :class:`~sam_triton.VideoSessionNotFoundError` instead.
        **options: :class:`~sam_triton.SamClient` options when ``client`` is a URL: ``timeout``
            bounds each answer's wait; ``image_upload="auto"`` (the default) sends each frame as
            its own JPEG/PNG file (or a PNG of an array) when smaller than its pixels.
    """

    def __init__(
        self,
        client: str | SamClient = "localhost:8001",
        *,
        frame_deadline: float | None = None,
        reprime: bool = True,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(client, options)
        self._tracking = _Tracking(self.client.config, frame_deadline, reprime)
        self._stream = _Stream(self.client, self._tracking.session.metadata)

    @property
    def session_id(self) -> str:
        return self._tracking.session.session_id

    @property
    def frame_deadline(self) -> float | None:
        """Seconds a live frame may wait on the server before it is dropped (None: never)."""
        return self._tracking.frame_deadline

    @frame_deadline.setter
    def frame_deadline(self, seconds: float | None) -> None:
        self._tracking.frame_deadline = _Tracking.deadline(seconds)

    def _run(self, op: Op[T]) -> T:
        return _core.run_sync(op, self._stream.execute)

    def track(self, frame: ImageInput, frame_idx: int | None = None) -> TrackedFrame:
        """Every object's mask on the next frame (``frame_idx``: its index, default the one
        after the last frame tracked; indices only go forward on a live stream)."""
        return self._run(self._tracking.track(frame, frame_idx))

    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: npt.ArrayLike | None = None,
        labels: npt.ArrayLike | None = None,
        *,
        box: npt.ArrayLike | None = None,
        clear_old_points: bool = True,
        frame: ImageInput | None = None,
    ) -> TrackedFrame:
        """Points (and/or a box) for object ``obj_id`` on frame ``frame_idx``: the frame just
        tracked needs no ``frame``, another one does."""
        return self._run(
            self._tracking.add_points(frame_idx, obj_id, points, labels, box, clear_old_points, frame)
        )

    def add_box(
        self, frame_idx: int, obj_id: int, box: npt.ArrayLike, *, frame: ImageInput | None = None
    ) -> TrackedFrame:
        return self._run(self._tracking.add_points(frame_idx, obj_id, None, None, box, True, frame))

    def add_mask(
        self, frame_idx: int, obj_id: int, mask: npt.ArrayLike, *, frame: ImageInput | None = None
    ) -> TrackedFrame:
        return self._run(self._tracking.add_mask(frame_idx, obj_id, mask, frame))

    def clear_prompts(self, frame_idx: int, obj_id: int) -> TrackedFrame:
        return self._run(self._tracking.clear_prompts(frame_idx, obj_id))

    def remove_object(self, obj_id: int) -> list[TrackedFrame]:
        """Stop tracking ``obj_id``; the frames with prompts, without it."""
        return self._run(self._tracking.remove_object(obj_id))

    def reset(self) -> None:
        """Forget every object (the session and its frame size stay)."""
        self._run(self._tracking.reset())

    def close(self) -> None:
        """Close the session on the server, then the stream (and an owned client)."""
        try:
            self._run(_video_core.close_op(self._tracking.session))
        except errors.SamTritonError:
            pass  # already gone on the server: closing is done either way
        finally:
            self._stream.close()
            super().close()


class AsyncVideoTracker:
    """:class:`VideoTracker` for asyncio: the same methods, awaitable.

    ``client``: a URL or an :class:`~sam_triton.AsyncSamClient` to share.
    """

    def __init__(
        self,
        client: str | AsyncSamClient = "localhost:8001",
        *,
        frame_deadline: float | None = None,
        reprime: bool = True,
        **options: Unpack[ClientOptions],
    ) -> None:
        if isinstance(client, AsyncSamClient):
            if options:
                raise TypeError("client options apply only when a URL is given, not an AsyncSamClient")
            self.client, self._owns_client = client, False
        else:
            self.client, self._owns_client = AsyncSamClient(client, **options), True
        self._tracking = _Tracking(self.client.config, frame_deadline, reprime)
        self._stream = _AsyncStream(self.client, self._tracking.session.metadata)

    @property
    def session_id(self) -> str:
        return self._tracking.session.session_id

    async def _run(self, op: Op[T]) -> T:
        return await _core.run_async(op, self._stream.execute)

    async def track(self, frame: ImageInput, frame_idx: int | None = None) -> TrackedFrame:
        return await self._run(self._tracking.track(frame, frame_idx))

    async def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: npt.ArrayLike | None = None,
        labels: npt.ArrayLike | None = None,
        *,
        box: npt.ArrayLike | None = None,
        clear_old_points: bool = True,
        frame: ImageInput | None = None,
    ) -> TrackedFrame:
        op = self._tracking.add_points(frame_idx, obj_id, points, labels, box, clear_old_points, frame)
        return await self._run(op)

    async def add_box(
        self, frame_idx: int, obj_id: int, box: npt.ArrayLike, *, frame: ImageInput | None = None
    ) -> TrackedFrame:
        return await self._run(self._tracking.add_points(frame_idx, obj_id, None, None, box, True, frame))

    async def add_mask(
        self, frame_idx: int, obj_id: int, mask: npt.ArrayLike, *, frame: ImageInput | None = None
    ) -> TrackedFrame:
        return await self._run(self._tracking.add_mask(frame_idx, obj_id, mask, frame))

    async def clear_prompts(self, frame_idx: int, obj_id: int) -> TrackedFrame:
        return await self._run(self._tracking.clear_prompts(frame_idx, obj_id))

    async def remove_object(self, obj_id: int) -> list[TrackedFrame]:
        return await self._run(self._tracking.remove_object(obj_id))

    async def reset(self) -> None:
        await self._run(self._tracking.reset())

    async def close(self) -> None:
        try:
            await self._run(_video_core.close_op(self._tracking.session))
        except errors.SamTritonError:
            pass
        finally:
            self._stream.close()
            if self._owns_client:
                await self.client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""The ``video`` scenario: live camera streams tracked by ``sam_video``, open loop.

Each of ``streams`` streams opens a session, tracks its first frame and prompts one object on
it (a click on a bright square drifting over a textured background: :func:`stream_frame`),
then sends ``frames`` more frames at ``fps`` frames/s on its own clock whatever the server
does: a frame goes out when it is due, not when the previous answer came back (a camera does
not wait), so several of a stream's frames may be on the server at once. Each carries the
live deadline ``frame_deadline``: a frame the server could not start within it after it
arrived comes back ``dropped`` (the server sheds it; its answer is one message, no masks).

Per frame: answered (masks), dropped, or failed (an error answer). The latency of an answered
frame counts from when it was due to its answer, so a server that falls behind shows it
instead of silently lowering the offered load. Server memory: ``sam_video_bytes`` (the
server's own count of every video session's state: the tracker's memories and pointers plus
the one frame's features it keeps) read from the metrics endpoint before the streams open and
after their last answer, before they close; the difference divided by the streams is the
memory per stream.

Frames go out through the SDK's own operations (:mod:`sam_triton._video_core`) on one gRPC
stream per session; the stream here only sends without waiting, which the SDK's trackers
(one answer per call) do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import numpy as np
import numpy.typing as npt
from sam_triton import _video_core, errors
from sam_triton._core import Call, Op, observe
from sam_triton._video_core import TrackedFrame, VideoSession
from sam_triton.aio import AsyncSamClient

from .loadgen import Sample, SampleHook, describe_error
from .runner import LoadLevel, RunResult

DROPPED = "FrameDropped"
"""The error name a dropped frame's sample carries (it is counted apart from failures)."""

SQUARE = 48
"""The tracked object's side in pixels."""


@dataclass(frozen=True)
class VideoOptions:
    streams: int = 1
    fps: float = 5.0
    frames: int = 50
    """Frames per stream after the first (the prompted one)."""
    frame_deadline: float | None = None
    """Seconds a live frame may wait on the server; None: one frame interval (1 / fps)."""
    size: tuple[int, int] = (240, 320)
    """(H, W) of the frames."""

    def __post_init__(self) -> None:
        if self.streams < 1 or self.frames < 1:
            raise ValueError("streams and frames must be >= 1")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.frame_deadline is not None and not self.frame_deadline > 0:
            raise ValueError(f"frame_deadline must be positive, got {self.frame_deadline}")
        if min(self.size) < 2 * SQUARE:
            raise ValueError(f"frames must be at least {2 * SQUARE} pixels on each side, got {self.size}")

    @property
    def deadline(self) -> float:
        return 1.0 / self.fps if self.frame_deadline is None else self.frame_deadline

    def describe(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "fps": self.fps,
            "frames_per_stream": self.frames,
            "frame_deadline_s": self.deadline,
            "size": list(self.size),
        }


def stream_frame(stream: int, index: int, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Frame ``index`` of stream ``stream``: a bright square drifting right (wrapping) over a
    textured background of the stream's own."""
    height, width = size
    background = np.random.default_rng(stream).integers(0, 80, (height, width, 3), dtype=np.uint8)
    x = (8 + 4 * index) % (width - SQUARE)
    y = height // 2 - SQUARE // 2
    background[y : y + SQUARE, x : x + SQUARE] = (230, 200, 40)
    return background


def object_click(size: tuple[int, int]) -> list[list[float]]:
    """The click on frame 0's square."""
    return [[8 + SQUARE / 2, size[0] / 2]]


# --------------------------------------------------------------------------- server memory


def video_bytes(metrics_url: str | None) -> int | None:
    """``sam_video_bytes`` summed over the server's video models (None: no metrics)."""
    if metrics_url is None:
        return None
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("sam_video_bytes{") or line.startswith("sam_video_bytes "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return int(total) if found else None


# --------------------------------------------------------------------------- one stream


class _Pipeline:
    """One session's gRPC stream: requests written when due, answers read in order by one
    reader (``sam_video`` answers a session's requests in the order they came)."""

    def __init__(self, client: AsyncSamClient, session: VideoSession) -> None:
        metadata = client.config.call_metadata() + session.metadata
        self._client = client
        self._call: Any = client._get_stub().ModelStreamInfer(metadata=metadata)
        self._waiting: deque[tuple[Call, asyncio.Future[Any]]] = deque()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                answer = await self._call.read()
                if answer is grpc.aio.EOF:
                    raise errors.ServerUnavailableError("the server ended the video stream")
                call, future = self._waiting.popleft()
                observe(self._client.config, call, answer)
                try:
                    future.set_result(_video_core.unwrap(answer, call.context))
                except errors.SamTritonError as exc:
                    future.set_exception(exc)
        except (grpc.RpcError, errors.SamTritonError) as exc:
            error = (
                exc
                if isinstance(exc, errors.SamTritonError)
                else errors.from_rpc_error(exc, context="video stream")
            )
            while self._waiting:
                self._waiting.popleft()[1].set_exception(error)

    async def send(self, call: Call) -> asyncio.Future[Any]:
        """Write ``call`` now; the future is its answer."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((call, future))
        await self._call.write(call.request)
        return future

    async def run(self, op: Op[Any]) -> Any:
        """An SDK operation, each of its calls answered before the next is sent."""
        try:
            calls = next(op)
            while True:
                futures = [await self.send(call) for call in calls]
                calls = op.send([await future for future in futures])
        except StopIteration as stop:
            return stop.value

    async def close(self) -> None:
        await self._call.done_writing()
        self._call.cancel()
        self._reader.cancel()


@dataclass
class StreamCounts:
    sent: int = 0
    answered: int = 0
    dropped: int = 0
    failed: int = 0
    in_order: bool = True
    """Every answer came for the frame sent next in the stream's order."""


@dataclass
class VideoResult:
    options: VideoOptions
    run: RunResult
    """Every measured frame of every stream (dropped ones as errors named :data:`DROPPED`)."""
    streams: list[StreamCounts]
    bytes_before: int | None
    bytes_after: int | None
    bytes_peak: int | None

    @property
    def bytes_per_stream(self) -> float | None:
        if self.bytes_before is None or self.bytes_after is None:
            return None
        return (self.bytes_after - self.bytes_before) / self.options.streams

    def totals(self) -> StreamCounts:
        total = StreamCounts()
        for s in self.streams:
            total.sent += s.sent
            total.answered += s.answered
            total.dropped += s.dropped
            total.failed += s.failed
            total.in_order &= s.in_order
        return total


class _Run:
    def __init__(self, client: AsyncSamClient, opts: VideoOptions, on_sample: SampleHook | None) -> None:
        self.client, self.opts, self.on_sample = client, opts, on_sample
        self.samples: list[Sample] = []
        self.open: list[tuple[VideoSession, _Pipeline]] = []
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def stream(self, number: int, primed: asyncio.Barrier) -> StreamCounts:
        """Open, track frame 0 and click the object on it, then the paced frames; the session
        stays open (:meth:`close` ends it) so the server's memory can be read with it."""
        session = VideoSession(self.client.config)
        pipeline = _Pipeline(self.client, session)
        self.open.append((session, pipeline))
        size = self.opts.size
        await pipeline.run(_video_core.track_op(session, stream_frame(number, 0, size), 0))
        await pipeline.run(_video_core.add_points_op(session, 0, 1, object_click(size), [1]))
        await primed.wait()  # every stream primed: the paced frames start together
        t0 = self.now()
        answers = []
        for i in range(1, self.opts.frames + 1):
            due = t0 + (i - 1) / self.opts.fps
            op = _video_core.track_op(
                session, stream_frame(number, i, size), i, deadline_s=self.opts.deadline
            )
            (call,) = next(op)  # the frame's request, built before it is due
            await asyncio.sleep(max(0.0, due - self.now()))
            start = self.now()
            answers.append(asyncio.create_task(self._answer(op, await pipeline.send(call), i, due, start)))
        counts = StreamCounts(sent=len(answers))
        for frame_idx, task in enumerate(answers, start=1):
            tracked = await task
            if tracked is None:
                counts.failed += 1
                continue
            counts.in_order &= tracked.frame_idx == frame_idx
            if tracked.dropped:
                counts.dropped += 1
            else:
                counts.answered += 1
        return counts

    async def _answer(
        self, op: Op[TrackedFrame], answer: asyncio.Future[Any], index: int, due: float, start: float
    ) -> TrackedFrame | None:
        tracked: TrackedFrame | None = None
        error: tuple[str, str | None, str] | None = None
        try:
            op.send([await answer])
        except StopIteration as stop:
            tracked = stop.value
        except errors.SamTritonError as exc:
            error = describe_error(exc)
        if tracked is not None and tracked.dropped:
            error = (DROPPED, None, "its deadline passed before the server got to it")
        sample = Sample(index, due, start, self.now(), False, *(error or (None, None, None)))
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)
        return tracked

    async def close(self) -> None:
        for session, pipeline in self.open:
            with contextlib.suppress(errors.SamTritonError):  # gone on the server already
                await pipeline.run(_video_core.close_op(session))
            await pipeline.close()


async def _sample_peak(metrics_url: str | None, peak: list[int], interval: float = 1.0) -> None:
    while True:
        now = await asyncio.to_thread(video_bytes, metrics_url)
        if now is not None:
            peak.append(now)
        await asyncio.sleep(interval)


async def run_video(
    client: AsyncSamClient,
    opts: VideoOptions,
    metrics_url: str | None,
    on_sample: SampleHook | None = None,
) -> VideoResult:
    """The streams, side by side; the server's video bytes before, during and after them."""
    before = await asyncio.to_thread(video_bytes, metrics_url)
    run = _Run(client, opts, on_sample)
    primed = asyncio.Barrier(opts.streams)
    peak: list[int] = []
    sampler = asyncio.create_task(_sample_peak(metrics_url, peak))
    try:
        streams = list(await asyncio.gather(*(run.stream(n, primed) for n in range(opts.streams))))
        after = await asyncio.to_thread(video_bytes, metrics_url)
    finally:
        sampler.cancel()
        await run.close()
    if after is not None:
        peak.append(after)
    level = LoadLevel("open", rate=opts.fps * opts.streams)
    return VideoResult(
        opts,
        RunResult("frames", level, sorted(run.samples, key=lambda s: s.scheduled)),
        streams,
        before,
        after,
        max(peak) if peak else None,
    )

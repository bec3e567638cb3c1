"""``sam_video``'s transport pieces without a server: the order work is done in (per session in
arrival order, across sessions prompt > live frame > offline frame, streams in turn), the
session store's bounds (count, bytes, idle time), and how the SDK reads a stream's error text."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sam_triton import errors
from sam_triton._video_core import stream_error
from sam_triton_server.backend.video_lane import LIVE, OFFLINE, PROMPT, LaneFull, VideoLane
from sam_triton_server.backend.video_sessions import SessionLimit, VideoSessionStore

from tests.helpers import wait_until


def test_lane_keeps_each_sessions_order_and_serves_prompts_before_live_before_offline() -> None:
    lane = VideoLane(workers=1, max_pending=16)
    gate, done = threading.Event(), []
    try:
        lane.submit("blocker", OFFLINE, gate.wait)  # holds the one worker while the rest queue up
        time.sleep(0.05)
        lane.submit("offline", OFFLINE, lambda: done.append("offline-1"))
        lane.submit("offline", OFFLINE, lambda: done.append("offline-2"))
        lane.submit("live", LIVE, lambda: done.append("live-1"))
        # A prompt queued behind its own session's frame waits for that frame (order within a
        # session), but both go before the offline session's work.
        lane.submit("live", PROMPT, lambda: done.append("live-prompt"))
        lane.submit("clicker", PROMPT, lambda: done.append("click"))
        gate.set()
        deadline = time.monotonic() + 10
        while len(done) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        gate.set()
        lane.shutdown()
    assert done == ["click", "live-1", "live-prompt", "offline-1", "offline-2"]


def test_streams_take_turns_and_a_dropped_frame_keeps_its_streams_turn() -> None:
    """Two live streams' frames queued behind long work, A's all before B's: they are served
    in turn, not A's backlog first (seen failing with arrival order alone: a paced two-stream
    bench answered 11 frames of one stream and 1 of the other). A's first frame is dropped as
    late (its job did no work), so A goes again before B."""
    lane = VideoLane(workers=1, max_pending=16)
    gate, done = threading.Event(), []

    def frame(name: str, worked: bool = True) -> Callable[[], bool]:
        def job() -> bool:
            done.append(name)
            return worked

        return job

    try:
        lane.submit("blocker", OFFLINE, gate.wait)  # holds the one worker while the rest queue up
        time.sleep(0.05)
        lane.submit("a", LIVE, frame("a1", worked=False))
        for name in ("a2", "a3"):
            lane.submit("a", LIVE, frame(name))
        for name in ("b1", "b2", "b3"):
            lane.submit("b", LIVE, frame(name))
        gate.set()
        assert wait_until(lambda: len(done) == 6, timeout=10)
    finally:
        gate.set()
        lane.shutdown()
    assert done == ["a1", "a2", "b1", "a3", "b2", "b3"]


def test_lane_refuses_work_beyond_its_bound_at_once() -> None:
    lane = VideoLane(workers=1, max_pending=2)
    gate = threading.Event()
    try:
        lane.submit("a", LIVE, gate.wait)
        lane.submit("a", LIVE, lambda: None)
        with pytest.raises(LaneFull, match="video_queue_size"):
            lane.submit("b", PROMPT, lambda: None)
    finally:
        gate.set()
        lane.shutdown()


@dataclass
class State:
    nbytes: int
    objects: int = 1

    def __len__(self) -> int:
        return self.objects


def test_store_bounds_sessions_by_count_bytes_and_idle_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store: VideoSessionStore[State] = VideoSessionStore(max_sessions=2, max_bytes=100, ttl_seconds=60)
    store.open("a", State(40))
    store.open("b", State(40, objects=2))
    assert (len(store), store.nbytes, store.objects()) == (2, 80, 3)
    with pytest.raises(SessionLimit, match="max_sessions"):  # live sessions are never dropped for a newcomer
        store.open("c", State(1))
    # "b" grows past the byte bound: the least recently used other session goes.
    grown = store.get("b")
    assert grown is not None
    grown.nbytes = 90
    assert store.fit("b") == ["a"]
    assert store.get("a") is None and "max_bytes" in store.why_gone("a")
    now[0] += 61  # idle past the TTL
    assert store.get("b") is None and "expired" in store.why_gone("b")
    store.open("c", State(1))
    assert store.close("c") and not store.close("c") and store.why_gone("c") == "closed"
    assert (store.stats.opened, store.stats.closed, store.stats.expired, store.stats.evicted) == (3, 1, 1, 1)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("NOT_FOUND: video session not found: 'v' (closed)", errors.VideoSessionNotFoundError),
        ("INVALID_ARG: sam_video: a frame of 4x4 in a session of 8x8 frames", errors.InvalidInputError),
        ("UNAVAILABLE: sam_video: sam_video overloaded: 64 waiting", errors.ServerOverloadedError),
        ("INTERNAL: sam_video failed: boom", errors.ServerError),
        ("[request id: 3] unexpected inference input 'x'", errors.ServerError),
    ],
)
def test_stream_errors_are_the_sdks_typed_errors(text: str, error: type[errors.SamTritonError]) -> None:
    raised = stream_error(text, "track frame 3")
    assert type(raised) is error
    assert text.partition(": ")[2] in raised.message or text in raised.message


def test_a_sam2_repository_serves_sam_video_as_a_decoupled_model_beside_its_encoder() -> None:
    from sam_triton_common import contract
    from sam_triton_export.repository import RepositoryOptions, repository_files

    from tests.test_repository import parse

    files = repository_files(RepositoryOptions(family=contract.SAM2.name, name="sam2.1-tiny"))
    config = parse(files[f"{contract.VIDEO_MODEL}/config.pbtxt"].decode())
    assert config.name == "sam2.1-tiny.sam_video" and config.model_transaction_policy.decoupled
    assert config.parameters["encoder_model"].string_value == "sam2.1-tiny.sam_encoder"
    required = [i.name for i in config.input if not i.optional]
    assert required == [contract.SESSION_ID, contract.VIDEO_OP]
    assert [o.name for o in config.output] == list(contract.VIDEO_OUTPUTS)
    assert b"models.video import" in files[f"{contract.VIDEO_MODEL}/1/model.py"]
    assert f"{contract.VIDEO_MODEL}/config.pbtxt" not in repository_files(RepositoryOptions())  # SAM 2 only

"""The parts of "many users at once" that need no server: sam_session's click lane and embed
pool, the queue bounds in the generated configs and their serve-time overrides, and what the SDK sends and
retries (deadline and priority parameters, ServerOverloadedError)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from sam_triton import ServerOverloadedError, errors
from sam_triton._core import Attempts, infer_call
from sam_triton._tensors import build_infer_request
from sam_triton.config import ClientConfig, Priority, RetryPolicy
from sam_triton_common import contract
from sam_triton_common.contract import ENCODER_MODEL
from sam_triton_export.repository import (
    AUTOMASK,
    DECODER,
    ENCODER,
    SESSION,
    RepositoryOptions,
    repository_files,
)
from sam_triton_server.backend.click_lane import ClickLane, LaneFull
from sam_triton_server.backend.embed_pool import EmbedPool, EncodeTimes, PoolFull
from sam_triton_server.launcher.queues import (
    QueueLimits,
    overlay_repository,
    parse_queue_overrides,
    queue_limits,
)

from tests.test_repository import parse
from tests.test_sdk_errors import FakeRpcError

# --------------------------------------------------------------------------- click lane


def test_click_lane_runs_in_arrival_order_and_refuses_beyond_its_bound() -> None:
    pending: list[int] = []
    lane = ClickLane(max_pending=3, on_pending=pending.append)
    release = threading.Event()
    ran: list[str] = []
    lane.submit(lambda: (release.wait(10), ran.append("first")))
    lane.submit(lambda: ran.append("second"))
    lane.submit(lambda: ran.append("third"))
    with pytest.raises(LaneFull, match="3 clicks are already running or waiting .limit 3."):
        lane.submit(lambda: ran.append("refused"))
    release.set()
    lane.shutdown()  # finishes what it accepted
    assert ran == ["first", "second", "third"]
    assert pending[:3] == [1, 2, 3] and pending[-1] == 0 and lane.pending == 0


def test_click_lane_frees_the_slot_of_a_failing_job() -> None:
    lane = ClickLane(max_pending=1)
    failed = threading.Event()

    def fails() -> None:
        failed.set()
        raise RuntimeError("a job's own error never reaches the lane")

    lane.submit(fails)
    assert failed.wait(10)
    deadline = time.monotonic() + 10
    while lane.pending and time.monotonic() < deadline:  # the worker's finally runs just after
        time.sleep(0.001)
    ran: list[str] = []
    lane.submit(lambda: ran.append("next"))
    lane.shutdown()
    assert ran == ["next"] and lane.pending == 0


# --------------------------------------------------------------------------- embed pool


def test_pool_is_bounded_and_refuses_at_once() -> None:
    pool = EmbedPool(workers=1, max_pending=2)
    release = threading.Event()
    ran: list[str] = []
    pool.submit("a", lambda: (release.wait(10), ran.append("a")))
    pool.submit("b", lambda: ran.append("b"))
    with pytest.raises(PoolFull, match="limit 2"):
        pool.submit("c", lambda: ran.append("c"))
    assert ran == []  # refused at once: while the first job still held the only worker
    release.set()
    pool.shutdown()
    assert ran == ["a", "b"] and pool.pending == 0


def test_pool_runs_one_job_per_key_and_followers_after_it() -> None:
    pool = EmbedPool(workers=4, max_pending=8)
    release = threading.Event()
    order: list[str] = []
    pool.submit("img", lambda: (release.wait(10), order.append("encode")))
    assert pool.in_flight("img")
    pool.submit("img", lambda: order.append("same image again"))  # waits, never concurrent
    assert pool.follow("img", lambda: order.append("click"))
    assert not pool.follow("other", lambda: order.append("never"))  # nothing in flight there
    release.set()
    pool.shutdown()
    assert order[0] == "encode" and sorted(order[1:]) == ["click", "same image again"]
    assert not pool.in_flight("img") and pool.pending == 0


def test_pool_refuses_an_encode_that_could_not_start_before_its_deadline() -> None:
    pool = EmbedPool(workers=1, max_pending=8)
    release = threading.Event()
    ran: list[str] = []
    pool.submit("a", lambda: (release.wait(10), ran.append("a")), time_left=0.001)  # nothing timed yet
    pool.record_encode(2.0)
    pool.submit("b", lambda: ran.append("b"), time_left=2.5)  # one encode ahead: starts in 2 s
    ahead = r"about 4\.0 s of encodes ahead \(2 running or waiting, 2\.0 s each\)"
    with pytest.raises(PoolFull, match=ahead):
        pool.submit("c", lambda: ran.append("c"), time_left=3.0)
    pool.submit("a", lambda: ran.append("a again"), time_left=0.001)  # joins the encode in flight
    pool.submit("d", lambda: ran.append("d"))  # no deadline
    release.set()
    pool.shutdown()
    assert ran[0] == "a" and sorted(ran[1:]) == ["a again", "b", "d"]


def test_encode_times_weigh_the_newest_most() -> None:
    times = EncodeTimes(weight=0.5)
    assert times.mean is None
    times.add(1.0)
    times.add(3.0)
    assert times.mean == 2.0
    times.add(3.0)
    assert times.mean == 2.5


# --------------------------------------------------------------------------- configs


def test_every_queue_is_bounded_with_priorities_and_deadlines() -> None:
    limits = QueueLimits(encoder=5, decoder=6, session=7, automask=2, embed_workers=3, embed_queue=9)
    files = repository_files(RepositoryOptions(queues=limits))
    expected = {ENCODER: (5, Priority.FOREGROUND), DECODER: (6, Priority.INTERACTIVE)}
    expected |= {AUTOMASK: (2, Priority.BATCH)}
    for model, (size, level) in expected.items():
        batching = parse(files[f"{model}/config.pbtxt"].decode()).dynamic_batching
        policy = batching.default_queue_policy
        assert (policy.max_queue_size, batching.default_priority_level) == (size, level), model
        assert batching.priority_levels == len(Priority)
        # Triton honours a request's own timeout only below a non-zero default.
        assert policy.allow_timeout_override and policy.default_timeout_microseconds > 0
    # sam_session has no Triton queue (its dynamic batcher stalled back-to-back clicks): its
    # execute() only dispatches, and its own click lane and embed pool carry the bounds.
    session = parse(files[f"{SESSION}/config.pbtxt"].decode())
    assert not session.HasField("dynamic_batching")
    assert session.parameters["click_queue_size"].string_value == "7"
    assert session.parameters["embed_workers"].string_value == "3"
    assert session.parameters["embed_queue_size"].string_value == "9"
    with pytest.raises(ValueError, match="embed_queue"):
        QueueLimits(embed_queue=0)


def test_video_sessions_and_their_lane_are_bounded_at_export_and_per_run(tmp_path: Path) -> None:
    """sam_video (SAM 2) keeps its bounds itself: its sessions at once and its lane's requests
    running or waiting, written at export and overridden by serve's overlay like the rest."""
    video_config = f"{contract.VIDEO_MODEL}/config.pbtxt"
    files = repository_files(
        RepositoryOptions(family=contract.SAM2.name, queues=QueueLimits(video=7, video_sessions=5))
    )
    video = parse(files[video_config].decode())
    assert video.parameters["video_queue_size"].string_value == "7"
    assert video.parameters["max_sessions"].string_value == "5"
    repository = tmp_path / "repo"
    for relative, content in files.items():
        (repository / relative).parent.mkdir(parents=True, exist_ok=True)
        (repository / relative).write_bytes(content)
    overrides = parse_queue_overrides(["sam_video=11", "video_sessions=3", "sam_session=4"])
    overlay = overlay_repository(repository, overrides, tmp_path / "overlay")
    video = parse((overlay / video_config).read_text())
    assert video.parameters["video_queue_size"].string_value == "11"
    assert video.parameters["max_sessions"].string_value == "3"
    assert (
        parse((overlay / SESSION / "config.pbtxt").read_text()).parameters["click_queue_size"].string_value
        == "4"
    )


def test_serve_overrides_rewrite_an_overlay_not_the_repository(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    for relative, content in repository_files(RepositoryOptions()).items():
        (repository / relative).parent.mkdir(parents=True, exist_ok=True)
        (repository / relative).write_bytes(content)
    overrides = parse_queue_overrides(["sam_encoder=3", "sam_session=4", "embed_queue=5"])
    overlay = overlay_repository(repository, overrides, tmp_path / "overlay")
    encoder = parse((overlay / ENCODER / "config.pbtxt").read_text())
    session = parse((overlay / SESSION / "config.pbtxt").read_text())
    assert encoder.dynamic_batching.default_queue_policy.max_queue_size == 3
    assert session.parameters["embed_queue_size"].string_value == "5"
    assert session.parameters["click_queue_size"].string_value == "4"
    assert (overlay / SESSION / "1" / "model.py").read_text() == (
        repository / SESSION / "1" / "model.py"
    ).read_text()
    assert (overlay / DECODER).is_symlink()  # untouched models are linked whole
    original = parse((repository / ENCODER / "config.pbtxt").read_text())
    assert original.dynamic_batching.default_queue_policy.max_queue_size == QueueLimits().encoder
    exported = queue_limits(parse_queue_overrides(["sam_automask=2", "sam_session=3", "embed_queue=9"]))
    assert exported == QueueLimits(automask=2, session=3, embed_queue=9)  # export --queue
    video = queue_limits(parse_queue_overrides(["sam_video=7", "video_sessions=5"]))
    assert video == QueueLimits(video=7, video_sessions=5)
    for bad in (["sam_encoder"], ["nope=3"], ["sam_encoder=0"], ["sam_encoder=x"]):
        with pytest.raises(ValueError, match="--queue"):
            parse_queue_overrides(bad)


# --------------------------------------------------------------------------- SDK


def test_overload_messages_map_to_server_overloaded_error() -> None:
    for message in (
        "[request id: <id_unknown>] Exceeds maximum queue size",
        "sam_session overloaded: 16 encodes are already running or waiting (limit 16); retry later",
    ):
        err = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, message))
        assert type(err) is ServerOverloadedError and isinstance(err, errors.ResourceExhaustedError)
    expired = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Request timeout expired"))
    assert type(expired) is errors.DeadlineExceededError


def test_overload_is_retried_only_within_the_deadline() -> None:
    policy = RetryPolicy(retries=5, initial_backoff=0.1, max_backoff=1.0, jitter=0.5)
    overloaded = ServerOverloadedError("x", code="UNAVAILABLE")
    delays = [policy.delay(overloaded, attempt, remaining=10.0) for attempt in range(5)]
    bases = [min(1.0, 0.1 * 2**a) for a in range(5)]  # exponential, capped at max_backoff
    assert all(d is not None and 0.5 * b <= d <= 1.5 * b for b, d in zip(bases, delays, strict=True))
    assert policy.delay(overloaded, 0, remaining=0.04) is None  # the backoff would outlive the deadline
    assert policy.delay(overloaded, 5, remaining=10.0) is None


def test_each_request_carries_the_time_left_and_the_priority() -> None:
    config = ClientConfig(timeout=2.0)
    request = build_infer_request("sam_session", {}, ["cache_hit"])
    call = infer_call(config, request, "lookup")
    sent, timeout = Attempts(config, priority=Priority.BATCH).prepare(call)
    assert timeout is not None and 0 < timeout <= 2.0
    assert 0 < sent.parameters["timeout"].int64_param <= 2_000_000
    assert sent.parameters["priority"].uint64_param == Priority.BATCH
    unbounded, _ = Attempts(ClientConfig(timeout=None)).prepare(
        infer_call(config, build_infer_request("m", {}), "x")
    )
    assert "timeout" not in unbounded.parameters and "priority" not in unbounded.parameters
    for bad in (0, -1, 1.5, True):
        with pytest.raises(errors.InvalidInputError, match="priority"):
            Attempts(config, priority=bad)  # type: ignore[arg-type]


def test_serve_refuses_an_unknown_queue_override(tmp_path: Path) -> None:
    (tmp_path / ENCODER).mkdir()
    (tmp_path / ENCODER / "config.pbtxt").write_bytes(
        repository_files(RepositoryOptions())[f"{ENCODER}/config.pbtxt"]
    )
    command = [
        sys.executable,
        "-m",
        "sam_triton",
        "serve",
        "--repository",
        str(tmp_path),
        "--queue",
        "sam_encodr=4",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "sam_encodr=4" in result.stderr and "sam_encoder" in result.stderr


def test_bench_counts_rejections_apart_from_failures() -> None:
    from sam_triton_bench.loadgen import Sample
    from sam_triton_bench.stats import summarize, timeline

    samples = [
        Sample(0, 0.0, 0.0, 0.1, False),
        Sample(1, 0.0, 0.0, 0.1, False, "ServerOverloadedError", "UNAVAILABLE", "Exceeds maximum queue size"),
        Sample(2, 0.0, 0.0, 0.2, False, "ServerError", "INTERNAL", "boom"),
    ]
    summary = summarize(samples)
    assert (summary.ok, summary.errors, summary.rejected) == (1, 1, 1)
    assert summary.errors_by_class == {"ServerError": 1}
    (point,) = timeline(samples)
    assert (point.completed, point.errors, point.rejected) == (1, 1, 1)


def niceness_after(call: str) -> list[int]:
    """The niceness of a fresh process's main thread and of a thread already running in it,
    after ``call`` (``tid``: that thread's native id, in a list)."""
    script = f"""
import os, threading
from sam_triton_server.backend.models._common import lower_cpu_priority
started, release = threading.Event(), threading.Event()
tid = []
def worker():
    tid.append(threading.get_native_id()); started.set(); release.wait()
thread = threading.Thread(target=worker); thread.start(); started.wait()
{call}
print(os.getpriority(os.PRIO_PROCESS, 0), os.getpriority(os.PRIO_PROCESS, tid[0]))
release.set(); thread.join()
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return [int(value) for value in out.stdout.split()]


def test_lower_cpu_priority_reaches_threads_that_already_run() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness_after("lower_cpu_priority(7)") == [min(19, base + 7)] * 2


def test_lower_cpu_priority_spares_the_threads_it_is_told_to() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness_after("lower_cpu_priority(7, spare=tid)") == [min(19, base + 7), base]


def test_bls_calls_of_one_stub_never_overlap() -> None:
    """Two threads of one stub in BLS at once crashed Triton 2.51 (see models/_common.py):
    the embed workers' encoder calls take turns, whatever embed_workers says."""
    import time
    from types import SimpleNamespace

    from sam_triton_server.backend.models._common import OnnxModelBase

    state = {"inside": 0, "most": 0}
    guard = threading.Lock()

    class Request:
        def __init__(self, **_: object) -> None:
            pass

        def exec(self) -> object:
            with guard:
                state["inside"] += 1
                state["most"] = max(state["most"], state["inside"])
            time.sleep(0.05)
            with guard:
                state["inside"] -= 1
            return SimpleNamespace(has_error=lambda: False)

    embedding = np.zeros((1, 256, 64, 64), np.float32)
    model = OnnxModelBase.__new__(OnnxModelBase)
    model.pb = SimpleNamespace(
        InferenceRequest=Request,
        PreferredMemory=lambda kind, device: (kind, device),
        TRITONSERVER_MEMORY_CPU="cpu",
        Tensor=lambda name, value: (name, value),
        get_output_tensor_by_name=lambda reply, name: SimpleNamespace(as_numpy=lambda: embedding),
    )
    image, size = np.zeros((1, 1024, 1024, 3), np.uint8), np.array([[1024, 1024]], np.int32)
    threads = [
        threading.Thread(target=model.encode_via_bls, args=(ENCODER_MODEL, image, size)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state["most"] == 1


def test_an_encode_its_deadline_dropped_in_the_encoders_queue_is_an_expiry() -> None:
    """An encode BLS call that sam_encoder's queue dropped because the caller's deadline passed
    is an expiry (UNAVAILABLE, counted ``expired``), not an internal error: it was counted
    ``internal`` when an embed waiting in sam_session's pool started with a little time left
    (test_many_users's expiry test caught it). Any other failed call stays internal."""
    from types import SimpleNamespace

    from sam_triton_server.backend.models._common import DeadlinePassed, OnnxModelBase

    def failing_with(message: str) -> OnnxModelBase:
        error = SimpleNamespace(message=lambda: message)
        reply = SimpleNamespace(has_error=lambda: True, error=lambda: error)
        model = OnnxModelBase.__new__(OnnxModelBase)
        model.pb = SimpleNamespace(
            InferenceRequest=lambda **_: SimpleNamespace(exec=lambda: reply),
            PreferredMemory=lambda kind, device: (kind, device),
            TRITONSERVER_MEMORY_CPU="cpu",
            Tensor=lambda name, value: (name, value),
        )
        return model

    image, size = np.zeros((1, 1024, 1024, 3), np.uint8), np.array([[1024, 1024]], np.int32)
    with pytest.raises(DeadlinePassed, match="Request timeout expired") as dropped:
        failing_with("Request timeout expired").encode_via_bls(ENCODER_MODEL, image, size, timeout_us=10)
    assert dropped.value.reason == "expired"
    with pytest.raises(RuntimeError, match="out of memory") as failed:
        failing_with("out of memory").encode_via_bls(ENCODER_MODEL, image, size)
    assert not isinstance(failed.value, DeadlinePassed)

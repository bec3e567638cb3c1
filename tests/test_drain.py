"""Graceful drain: SIGTERM to `sam-triton serve` while a click is in flight.

The click must be in flight for certain when the signal arrives, so this copy of the tiny
repository gives sam_decoder's dynamic batcher a long queue delay: a lone click waits there
(received, not answered) for seconds. Triton's metrics show when it is queued; then SIGTERM.
Readiness must be gone, a new click refused with a clean error, the queued click answered
exactly as before, and the server must exit 0.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sam_triton import (
    AmgParams,
    ImageEmbedding,
    ModelNotReadyError,
    Prediction,
    Prompt,
    SamClient,
    SamTritonError,
    ServerUnavailableError,
)

from tests.helpers import in_background, pid_alive, process_group, wait_until
from tests.test_automask_e2e import PARITY
from tests.test_serve import read_until, start_serve, tritonserver_children

READY = "[sam-triton] READY"
QUEUE_DELAY_US = 8_000_000
ENCODER_HOLD_US = 4_000_000


def hold_requests(repository: Path, model: str, microseconds: int) -> None:
    """``model`` of ``repository`` keeps its requests queued this long (a written config): no
    preferred batch size lets a batch start early, only the full batch or the delay."""
    config = repository / model / "config.pbtxt"
    delay = f"max_queue_delay_microseconds: {microseconds}"
    text, count = re.subn(r"max_queue_delay_microseconds: \d+", delay, config.read_text())
    assert count == 1
    config.write_text(re.sub(r"\n *preferred_batch_size: \[[^]]*\]", "", text))


def hold_decoder_requests(repository: Path, microseconds: int) -> None:
    """sam_decoder of ``repository`` keeps a lone request queued this long."""
    hold_requests(repository, "sam_decoder", microseconds)


def slow_batching_repository(tiny_repository: Path, target: Path) -> Path:
    shutil.copytree(tiny_repository, target)
    hold_decoder_requests(target, QUEUE_DELAY_US)
    return target


def pending_requests(metrics_url: str, model: str = "sam_decoder") -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    pattern = rf'^nv_inference_pending_request_count\{{model="{model}",version="1"\}} (\S+)$'
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def grpc_ready(client: SamClient) -> bool:
    try:
        return client.server_ready()
    except SamTritonError:
        return False


def http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_click_in_flight_at_sigterm_completes(
    tiny_repository: Path, triton_server: Any, tmp_path: Path
) -> None:
    repository = slow_batching_repository(tiny_repository, tmp_path / "repo")
    process, grpc_port = start_serve(repository, "--exit-timeout", "60")
    try:
        output = read_until(process, READY, timeout=300)
        assert READY in output, output
        http_port = int(re.search(r"HTTP 127\.0\.0\.1:(\d+)", output).group(1))  # type: ignore[union-attr]
        metrics_port = int(re.search(r"metrics 127\.0\.0\.1:(\d+)", output).group(1))  # type: ignore[union-attr]
        (triton_pid,) = tritonserver_children(process.pid)
        image = np.random.default_rng(9).integers(0, 256, (40, 56, 3), dtype=np.uint8)
        prompt = Prompt(point_coords=[[12, 30]], point_labels=[1])

        with SamClient(triton_server.grpc_url, server_embeddings=False, timeout=120) as unheld:
            expected = unheld.predict(unheld.embed(image), prompt)  # the same weights, no hold
        with SamClient(f"127.0.0.1:{grpc_port}", server_embeddings=False, timeout=120, retries=0) as client:
            embedding = client.embed(image)
            answers: list[Prediction | list[Prediction] | BaseException] = []

            def click(target: ImageEmbedding) -> None:
                try:
                    answers.append(client.predict(target, prompt))
                except BaseException as error:  # reported by the assertions below
                    answers.append(error)

            in_flight = threading.Thread(target=click, args=(embedding,))
            in_flight.start()
            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            deadline = time.monotonic() + 30
            while pending_requests(metrics) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pending_requests(metrics) >= 1, "the click never reached sam_decoder's queue"

            process.send_signal(signal.SIGTERM)
            # Draining (as soon as the launcher has forwarded the signal): not ready for probes
            # or the SDK, and new clicks are refused cleanly.
            assert wait_until(lambda: not http_ready(http_port), timeout=5)
            # Triton stops its HTTP endpoint a moment before the server itself (gRPC readiness);
            # it then answers ServerReady with ready=false or UNAVAILABLE "Server exiting",
            # depending on how far its shutdown has got; either way it is not ready.
            assert wait_until(lambda: not grpc_ready(client), timeout=5)
            with pytest.raises(SamTritonError) as refused:
                client.predict(embedding, prompt)
            # "Server is stopping, scheduler ... stopped accepting new inference requests"
            # (UNAVAILABLE: retried, so a client behind a balancer lands on another replica);
            # once models unload, "... has no available versions".
            assert isinstance(refused.value, ServerUnavailableError | ModelNotReadyError), refused.value
            assert in_flight.is_alive(), "the queued click was answered before the drain was observed"

            in_flight.join(timeout=120)
        (answer,) = answers
        assert isinstance(answer, Prediction), answer
        assert isinstance(expected, Prediction)
        np.testing.assert_array_equal(answer.masks, expected.masks)
        np.testing.assert_array_equal(answer.scores, expected.scores)
        assert process.wait(timeout=120) == 0
        assert "in-flight requests finish (up to 60 s)" in (process.stdout.read() if process.stdout else "")
        assert wait_until(lambda: not pid_alive(triton_pid), timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def encoder_held(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny repository with every sam_encoder request held ENCODER_HOLD_US in its queue."""
    repository = tmp_path_factory.mktemp("encoder-held") / "repo"
    shutil.copytree(tiny_repository, repository)
    hold_requests(repository, "sam_encoder", ENCODER_HOLD_US)
    return repository


def serve_until_ready(repository: Path, *extra: str) -> tuple[subprocess.Popen[str], int, str]:
    """``sam-triton serve`` of ``repository``, once READY: the process, its gRPC port, its
    metrics URL."""
    process, grpc_port = start_serve(repository, *extra)
    output = read_until(process, READY, timeout=300)
    if READY not in output:
        process.kill()
        process.wait()
        pytest.fail(output)
    metrics_port = int(re.search(r"metrics 127\.0\.0\.1:(\d+)", output).group(1))  # type: ignore[union-attr]
    return process, grpc_port, f"http://127.0.0.1:{metrics_port}/metrics"


AUTOMASK = AmgParams(**{**PARITY, "crop_n_layers": 0, "output_mode": "uncompressed_rle"})  # type: ignore[arg-type]
PHOTO = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_an_embed_in_the_session_pool_and_an_automask_running_finish_at_sigterm(
    encoder_held: Path, triton_server: Any
) -> None:
    """The long calls a drain must wait for: a session embed whose encode is under way in
    ``sam_session``'s pool, and an automask job, both inside their BLS call to ``sam_encoder``
    (held in its queue here) when SIGTERM arrives. Both are answered, the automask's records
    as another server of the same weights gives them, and the server exits 0. Seen failing
    (the launcher's exit timeout set below the hold: the automask call was cut)."""
    with SamClient(triton_server.grpc_url, timeout=300) as unheld:
        expected = unheld.automask(PHOTO, AUTOMASK).records
    process, grpc_port, metrics = serve_until_ready(encoder_held, "--exit-timeout", "60")
    try:
        with SamClient(f"127.0.0.1:{grpc_port}", timeout=120, retries=0) as client:
            (embed_thread, embed_outcome), (job_thread, job_outcome) = (
                in_background(lambda: client.embed(PHOTO, session_id="drain-me")),
                in_background(lambda: client.automask(PHOTO, AUTOMASK)),
            )
            # Both encodes wait in sam_encoder's queue: the embed is in the pool, the job runs.
            assert wait_until(lambda: pending_requests(metrics, "sam_encoder") >= 2, timeout=30)
            process.send_signal(signal.SIGTERM)
            for thread in (embed_thread, job_thread):
                thread.join(timeout=120)
        (embedding,), (automask,) = embed_outcome, job_outcome
        assert isinstance(embedding, ImageEmbedding) and embedding.session_id == "drain-me", embedding
        assert embedding.original_size == PHOTO.shape[:2]
        assert not isinstance(automask, BaseException), automask
        assert automask.records == expected and len(expected) >= 1
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_call_cut_by_the_exit_timeout_leaves_no_process_behind(encoder_held: Path) -> None:
    """An exit timeout shorter than a running automask job: the caller gets a clean
    unavailable error, the server exits, and nothing of it remains. Seen failing: the busy
    sam_automask stub outlived tritonserver, holding its model's memory for good, until the
    launcher stopped the server's whole process group; and (3 runs in 4) Triton crashed on its
    way out when the cut call's encode came back, hung in its crash handler with its gRPC port
    open, and the caller waited out its own deadline, until the launcher bounded the wait."""
    process, grpc_port, metrics = serve_until_ready(encoder_held, "--exit-timeout", "1")
    try:
        (triton_pid,) = tritonserver_children(process.pid)
        with SamClient(f"127.0.0.1:{grpc_port}", timeout=60, retries=0) as client:
            job, outcome = in_background(lambda: client.automask(PHOTO, AUTOMASK))
            assert wait_until(lambda: pending_requests(metrics, "sam_encoder") >= 1, timeout=30)
            process.send_signal(signal.SIGTERM)
            job.join(timeout=60)
        assert isinstance(outcome[0], ServerUnavailableError), outcome
        assert process.wait(timeout=120) is not None
        assert wait_until(lambda: process_group(triton_pid) == [], timeout=10), process_group(triton_pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

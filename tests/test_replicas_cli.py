"""`sam-triton serve --replicas 2`: the launcher's processes start, answer through Envoy and
all go away, on SIGTERM and when the launcher itself is killed.

Runs on test_serve.py's one-model repository (seconds, no export); the SAM behaviour behind
Envoy is tests/test_replicas_e2e.py's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np
import pytest
from sam_triton.proto import inference_pb2 as pb
from sam_triton.proto import inference_pb2_grpc as pb_grpc
from sam_triton_server.launcher.envoy import HEALTH_PATH

from tests.helpers import free_ports, pid_alive, wait_until
from tests.test_serve import READY, read_until, write_repository


def consecutive_free_ports(count: int) -> int:
    """A base port whose next ``count`` ports are free right now (replica ports are base+3i+k)."""
    for _ in range(50):
        (base,) = free_ports(1)
        try:
            with ExitStack() as stack:
                for port in range(base, base + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


def children(parent_pid: int, name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent_pid), "-x", name], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    repository = write_repository(tmp_path / "repo")
    envoy_port, admin_port = free_ports(2)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sam_triton",
            "serve",
            "--repository",
            str(repository),
            "--replicas",
            "2",
            "--grpc-port",
            str(envoy_port),
            "--replica-base-port",
            str(consecutive_free_ports(6)),
            "--envoy-admin-port",
            str(admin_port),
            "--host",
            "127.0.0.1",
            "--quiet",
            "--ready-timeout",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = read_until(process, READY)
        assert READY in output, output
        yield process, envoy_port
    finally:
        process.kill()
        process.wait()


def double_through(port: int, session_id: str | None) -> list[float]:
    metadata = None if session_id is None else (("sam-session-id", session_id),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = pb.ModelInferRequest(
            model_name="doubler",
            inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 2])],
            raw_input_contents=[np.array([[1.5, -2.0]], np.float32).tobytes()],
        )
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30, metadata=metadata)
    result: list[float] = np.frombuffer(reply.raw_output_contents[0], np.float32).tolist()
    return result


def test_replicas_answer_through_envoy_and_stop_on_sigterm(
    launched: tuple[subprocess.Popen[str], int],
) -> None:
    process, envoy_port = launched
    tritons = children(process.pid, "tritonserver")
    envoys = children(process.pid, "envoy")
    assert len(tritons) == 2 and len(envoys) == 1
    # Both routes: the ring-hash one (header present) and the round-robin one.
    assert double_through(envoy_port, "sha256:abc") == [3.0, -4.0]
    assert double_through(envoy_port, None) == [3.0, -4.0]
    # The probe Kubernetes points at Envoy: plain HTTP/1.1 on the gRPC port.
    with urllib.request.urlopen(f"http://127.0.0.1:{envoy_port}{HEALTH_PATH}", timeout=5) as response:
        assert response.status == 200

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert wait_until(lambda: not any(pid_alive(pid) for pid in [*tritons, *envoys]), timeout=15)
    assert process.stdout is not None
    assert "[sam-triton] stopped: Envoy and 2 replicas have exited" in process.stdout.read()


def test_killed_launcher_leaves_no_replica_and_no_envoy(launched: tuple[subprocess.Popen[str], int]) -> None:
    process, _ = launched
    pids = [*children(process.pid, "tritonserver"), *children(process.pid, "envoy")]
    assert len(pids) == 3
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=15)


def test_zero_replicas_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sam_triton", "serve", "--replicas", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "needs at least one replica" in result.stderr

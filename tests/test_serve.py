"""`sam-triton serve`: a real tritonserver started, made ready, stopped, never orphaned.

These tests run the launcher on a one-model repository written here (a Python-backend
model that imports the project's packages, as the SAM models do), so they exercise the
server plumbing in seconds without an export.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from sam_triton.proto import inference_pb2 as pb
from sam_triton.proto import inference_pb2_grpc as pb_grpc
from sam_triton_server.launcher.process import SHM_DIRECTORY, remove_stale_shm_regions, shm_region_prefix

from tests.conftest import start_triton
from tests.helpers import free_ports, pid_alive, wait_until

READY = "[sam-triton] READY"

CONFIG = """
backend: "python"
max_batch_size: 4
input [{ name: "x" data_type: TYPE_FP32 dims: [2] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [2] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""

MODEL = textwrap.dedent(
    """
    import triton_python_backend_utils as pb_utils
    import onnxruntime  # noqa: F401  the served environment's packages are importable
    import sam_triton  # noqa: F401  and so is this project's code

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * 2)]))
            return responses
    """
)


def write_repository(
    root: Path, model_source: str = MODEL, manifest: dict[str, object] | None = None
) -> Path:
    # The exporter's manifest lives beside sam_encoder's config, so a repository that has
    # one names its model sam_encoder.
    model_dir = root / ("doubler" if manifest is None else "sam_encoder")
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    (model_dir / "1" / "model.py").write_text(model_source)
    if manifest is not None:
        (model_dir / "export.json").write_text(json.dumps(manifest))
    return root


def start_serve(repository: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    grpc_port, http_port, metrics_port = free_ports(3)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sam_triton",
            "serve",
            "--repository",
            str(repository),
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
            "--ready-timeout",
            "120",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, grpc_port


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 120.0) -> str:
    """Collect the launcher's output until ``marker`` appears (or it exits)."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            break
    return "".join(seen)


def tritonserver_children(parent_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent_pid), "tritonserver"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def test_serve_answers_grpc_and_stops_on_sigint(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repo")
    process, grpc_port = start_serve(repository)
    try:
        output = read_until(process, READY)
        assert READY in output, output
        (triton_pid,) = tritonserver_children(process.pid)

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest()).ready
            request = pb.ModelInferRequest(
                model_name="doubler",
                inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 2])],
                raw_input_contents=[np.array([[1.5, -2.0]], np.float32).tobytes()],
            )
            reply = stub.ModelInfer(request, timeout=30)
            assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [3.0, -4.0]

        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
        assert code == 0, process.stdout.read()[-3000:]
        assert time.monotonic() - started < 20
        assert wait_until(lambda: not pid_alive(triton_pid), timeout=10)
    finally:
        process.kill()
        process.wait()


def test_model_load_failure_prints_tritons_error_and_exits_nonzero(tmp_path: Path) -> None:
    broken = MODEL.replace("import sam_triton", "import module_that_does_not_exist")
    repository = write_repository(tmp_path / "repo", model_source=broken)
    process, _ = start_serve(repository, "--quiet")
    try:
        code = process.wait(timeout=120)
        assert process.stdout is not None
        output = process.stdout.read()
        assert code != 0
        assert "failed to load 'doubler'" in output
        assert "module_that_does_not_exist" in output
    finally:
        process.kill()
        process.wait()


def test_a_server_that_never_gets_ready_names_the_model_still_loading(tmp_path: Path) -> None:
    """A model whose ``initialize`` never returns keeps Triton "loading" for good (the Python
    backend waits on a live stub however long it takes): the start fails naming that model,
    so such a failure says where to look instead of being retried blindly."""
    from sam_triton_server.launcher.process import ServerOptions, TritonProcess, TritonStartError

    never_loads = "    def initialize(self, args):\n        import time\n\n        time.sleep(3600)\n"
    stuck = MODEL.replace("class TritonPythonModel:\n", "class TritonPythonModel:\n" + never_loads)
    grpc_port, http_port, metrics_port = free_ports(3)
    repository = write_repository(tmp_path / "repo", stuck)
    process = TritonProcess(ServerOptions(repository, grpc_port, http_port, metrics_port, exit_timeout=1))
    process.start()
    try:
        with pytest.raises(TritonStartError, match=r"not ready within 8 s \(still loading: doubler\)"):
            process.wait_ready(timeout=8)
    finally:
        process.stop(grace=5)


def test_killed_launcher_leaves_no_tritonserver(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repo")
    process, _ = start_serve(repository)
    try:
        assert READY in read_until(process, READY)
        (triton_pid,) = tritonserver_children(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert wait_until(lambda: not pid_alive(triton_pid), timeout=15)
        # What the killed launcher could not remove, the next server's start does.
        remove_stale_shm_regions()
        assert not list(SHM_DIRECTORY.glob(f"sam_triton_*_{process.pid}_*"))
    finally:
        process.kill()
        process.wait()


def test_a_stub_left_by_a_dead_launcher_is_killed_when_a_server_starts(tmp_path: Path) -> None:
    """A Python backend stub names its launcher in its region argument; one whose launcher is
    dead is an orphan that never exits by itself when it was busy in a call (seen: a
    sam_automask stub 90 minutes after its run). Stand-ins named as the stub binary and
    started as Triton starts stubs: the orphan is killed, a live launcher's stub is not."""
    from sam_triton_server.launcher.process import STUB_BINARY, kill_orphaned_stubs, shm_region_prefix

    stub = tmp_path / STUB_BINARY
    stub.symlink_to(sys.executable)
    model = tmp_path / "model.py"
    model.write_text("import time\n\ntime.sleep(120)\n")
    ended = subprocess.Popen(["true"])
    ended.wait()  # a launcher pid that is no longer alive
    live_region = shm_region_prefix() + "model"
    dead_region = live_region.replace(f"_{os.getpid()}_", f"_{ended.pid}_", 1)
    orphan = subprocess.Popen([str(stub), str(model), dead_region])
    served = subprocess.Popen([str(stub), str(model), live_region])
    try:  # Popen returns once the children have exec'd: their arguments are in /proc already
        killed = kill_orphaned_stubs()
        assert orphan.pid in killed and served.pid not in killed
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert served.poll() is None
    finally:
        for process in (orphan, served):
            process.kill()
            process.wait()


def test_a_killed_server_leaves_no_shared_memory_behind(tmp_path: Path) -> None:
    """The Python backend's regions (64 MiB and more each) outlive a server killed together
    with its stubs (an OOM kill, a timeout killing the process group); left behind run after
    run, they once filled /dev/shm and the machine's memory."""
    server = start_triton(write_repository(tmp_path / "repo"))
    regions = lambda: list(Path("/dev/shm").glob(f"{server.process.shm_prefix}*"))  # noqa: E731
    try:
        assert regions(), "the server's regions carry its own prefix"
        assert server.process.pid is not None
        os.killpg(server.process.pid, signal.SIGKILL)  # its own process group: server and stubs
        assert server.process.wait(timeout=30) == -signal.SIGKILL
        assert regions(), "SIGKILL leaves them behind ..."
    finally:
        server.process.stop()
    assert not regions(), "... and stop() removes them"


def test_only_regions_of_dead_launchers_in_this_pid_namespace_are_stale(tmp_path: Path) -> None:
    dead_pid = subprocess.Popen(["true"])  # a pid that has just exited
    dead_pid.wait()
    ours = shm_region_prefix()  # this (live) process
    namespace = ours.split("_")[2]
    regions = {
        "dead launcher": f"sam_triton_{namespace}_{dead_pid.pid}_0badc0de_1234",
        "live launcher": f"{ours}5678",
        "another pid namespace": f"sam_triton_{int(namespace) + 1}_{dead_pid.pid}_0badc0de_9",
        "not ours": "triton_python_backend_shm_region_42",
    }
    for name in regions.values():
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_shm_regions(tmp_path) == [tmp_path / regions["dead launcher"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        name for kind, name in regions.items() if kind != "dead launcher"
    )


def test_random_weights_are_announced_loudly(tmp_path: Path) -> None:
    manifest = {"model_type": "vit_b", "weights": {"random_seed": 7}}
    repository = write_repository(tmp_path / "repo", manifest=manifest)
    process, _ = start_serve(repository, "--quiet")
    try:
        output = read_until(process, READY)
        assert "RANDOM WEIGHTS - MASKS ARE MEANINGLESS" in output
        assert "seed 7" in output
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sam_triton", "serve", "--repository", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("flag", ["--grpc-port", "--http-port", "--metrics-port"])
def test_serve_help_lists_port_flags(flag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sam_triton", "serve", "--help"], capture_output=True, text=True
    )
    assert flag in result.stdout

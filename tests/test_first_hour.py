"""A new user's first hour (issue 24): the messages a user reads when something is off say what
to do next. A real tritonserver on a one-model repository (seconds to start, no export): the
API key and connection checks happen before any model is looked up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sam_triton_server.launcher.cli import random_weights_banner, repository_problem
from sam_triton_server.launcher.process import HAS_GPU, is_gpu_noise
from sam_triton_server.launcher.security import Security

from tests.conftest import ServedTriton, start_triton
from tests.helpers import communicate, free_ports, takes_ctrl_c
from tests.test_serve import MODEL, READY, read_until, start_serve, write_repository

API_KEY = "first-hour-key-0123456789"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SAM_TRITON_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "sam_triton", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environment, **(env or {})},
    )


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTriton]:
    served = start_triton(
        write_repository(tmp_path_factory.mktemp("keyed")), security=Security(api_key=API_KEY)
    )
    try:
        yield served
    finally:
        served.process.stop()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.full((64, 80, 3), 120, dtype=np.uint8)).save(path)
    return path


def segment(
    url: str, image: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli("segment", str(image), "--url", url, "--point", "10,10", "--json", os.devnull, *extra, env=env)


# ------------------------------------------------------------------------------ API key (item 1)


def test_a_missing_key_says_how_to_give_one(keyed_server: ServedTriton, image: Path) -> None:
    result = segment(keyed_server.grpc_url, image)
    assert result.returncode == 1, result.stderr  # a server's answer, not an input error
    assert "the server requires an API key: add --api-key KEY or set SAM_TRITON_API_KEY" in result.stderr


def test_a_wrong_key_says_where_it_came_from(keyed_server: ServedTriton, image: Path) -> None:
    wrong = "not-the-key-0123456789"
    flag = segment(keyed_server.grpc_url, image, "--api-key", wrong)
    assert flag.returncode == 1
    assert "the server refused the API key from --api-key" in flag.stderr
    from_env = segment(keyed_server.grpc_url, image, env={"SAM_TRITON_API_KEY": wrong})
    assert from_env.returncode == 1
    assert "the server refused the API key from SAM_TRITON_API_KEY" in from_env.stderr
    assert wrong not in flag.stderr + from_env.stderr  # the key itself is never echoed


# ------------------------------------------------------------------------ connecting (item 4)


def test_the_http_port_is_named_as_the_likely_mistake(keyed_server: ServedTriton, image: Path) -> None:
    result = segment(f"127.0.0.1:{keyed_server.http_port}", image)
    assert result.returncode == 1
    assert "is that Triton's HTTP (8000) or metrics (8002) port instead of gRPC (8001)?" in result.stderr


def test_tls_towards_a_plaintext_server_says_so(
    keyed_server: ServedTriton, image: Path, tmp_path: Path
) -> None:
    import trustme

    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    result = segment(keyed_server.grpc_url, image, "--tls-ca", str(tmp_path / "ca.pem"))
    assert result.returncode == 1
    assert f"the server at {keyed_server.grpc_url} does not speak TLS: leave out --tls-ca" in result.stderr


def test_nobody_listening_asks_whether_the_server_runs(image: Path) -> None:
    (port,) = free_ports(1)
    result = segment(f"127.0.0.1:{port}", image)
    assert result.returncode == 1
    assert (
        f"is `sam-triton serve` running, and is 127.0.0.1:{port} its gRPC port (default 8001)?"
        in result.stderr
    )


def test_bench_says_at_once_what_it_waits_for(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-m", "sam_triton", "bench", "--url", f"127.0.0.1:{port}", "--ready-timeout", "20",
         "--duration", "1", "--output", str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=takes_ctrl_c,
    )  # fmt: skip
    assert process.stderr is not None
    started = time.monotonic()
    first = process.stderr.readline()
    said_after = time.monotonic() - started
    process.send_signal(signal.SIGINT)  # the user gives up: no 20 s wait for the test either
    rest = communicate(process, timeout=60)[1]
    assert f"waiting up to 20 s (--ready-timeout) for 127.0.0.1:{port} to be ready" in first
    assert said_after < 15, "said while waiting, not after the timeout"
    assert process.returncode == 130
    assert "interrupted; nothing was measured, nothing written" in rest
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ serve start (item 2)


@pytest.mark.parametrize("flag", ["--grpc-port", "--http-port"])
def test_a_taken_port_is_named_before_any_model_loads(tmp_path: Path, flag: str) -> None:
    """A taken HTTP port once let the readiness probe find *another* server ready."""
    ports = dict(zip(["--grpc-port", "--http-port", "--metrics-port"], free_ports(3), strict=True))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[flag]))
        squatter.listen()
        started = time.monotonic()
        result = cli("serve", "--repository", str(write_repository(tmp_path / "repo")),
                     *[str(x) for item in ports.items() for x in item])  # fmt: skip
        took = time.monotonic() - started
    assert result.returncode == 2
    what = "gRPC" if flag == "--grpc-port" else "HTTP"
    assert f"{what} port 127.0.0.1:{ports[flag]} is not free" in result.stderr
    assert f"pick another port with {flag}" in result.stderr
    assert "READY" not in result.stderr
    assert took < 30, "refused before Triton loads anything"


@pytest.mark.parametrize("taken", ["envoy", "replica"])
def test_replicas_name_a_taken_port_before_anything_starts(tmp_path: Path, taken: str) -> None:
    from tests.test_replicas_cli import consecutive_free_ports

    envoy_port, admin_port = free_ports(2)
    base = consecutive_free_ports(6)
    squatted = envoy_port if taken == "envoy" else base + 4  # replica 1's HTTP port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", squatted))
        squatter.listen()
        result = cli("serve", "--repository", str(write_repository(tmp_path / "repo")), "--replicas", "2",
                     "--grpc-port", str(envoy_port), "--envoy-admin-port", str(admin_port),
                     "--replica-base-port", str(base))  # fmt: skip
    assert result.returncode == 2
    expected = (
        f"Envoy gRPC port 127.0.0.1:{squatted} is not free"
        if taken == "envoy"
        else f"replica 1 HTTP port 127.0.0.1:{squatted} is not free"
    )
    assert expected in result.stderr
    assert ("--grpc-port." if taken == "envoy" else "--replica-base-port.") in result.stderr
    assert "READY" not in result.stderr and "loading" not in result.stderr


def test_a_folder_that_is_not_a_repository_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"")
    result = cli("serve", "--repository", str(tmp_path))
    assert result.returncode == 2
    assert "is not a Triton model repository (no <model>/config.pbtxt in it)" in result.stderr
    assert "sam-triton export --model-type vit_b" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_repository_mistakes_name_the_fix(tmp_path: Path) -> None:
    write_repository(tmp_path / "project" / "model_repository")
    (tmp_path / "notes.txt").write_text("")
    assert repository_problem(tmp_path / "project" / "model_repository") is None
    one_up = repository_problem(tmp_path / "project")
    assert one_up is not None and f"--repository {tmp_path / 'project' / 'model_repository'}?" in one_up
    a_file = repository_problem(tmp_path / "notes.txt")
    assert a_file is not None and "is a file; give the folder `sam-triton export` wrote" in a_file
    missing = repository_problem(tmp_path / "nope")
    assert missing is not None and "does not exist; write one with `sam-triton export" in missing


@pytest.mark.skipif(HAS_GPU, reason="with a GPU these lines are real errors and stay")
def test_a_cpu_start_explains_the_cuda_lines_instead_of_printing_them(tmp_path: Path) -> None:
    process, _ = start_serve(write_repository(tmp_path / "repo"))
    try:
        output = read_until(process, READY)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert READY in output
    assert "no GPU on this machine: serving on the CPU" in output
    tritons = "\n".join(line for line in output.splitlines() if not line.startswith("[sam-triton]"))
    for noise in ("CudaDriverHelper", "NVML", "CUDA driver version is insufficient", "DCGM"):
        assert noise not in tritons
    errors = [line for line in output.splitlines() if line[:1] == "E" and line[1:5].isdigit()]
    assert errors == [], "a normal CPU start prints no error lines"


@pytest.mark.skipif(HAS_GPU, reason="with a GPU these lines are real errors and stay")
def test_a_failed_start_summary_opens_with_the_real_cause(tmp_path: Path) -> None:
    broken = MODEL.replace("import sam_triton", "import module_that_does_not_exist")
    process, _ = start_serve(write_repository(tmp_path / "repo", model_source=broken), "--quiet")
    try:
        assert process.wait(timeout=120) != 0
        assert process.stdout is not None
        output = process.stdout.read()
    finally:
        process.kill()
        process.wait()
    summary = output.split("tritonserver failed to start:", 1)[1].strip().splitlines()
    assert "failed to load 'doubler'" in summary[0] and "module_that_does_not_exist" in summary[0]
    assert not any(is_gpu_noise(line) for line in summary)


def test_gpu_noise_never_swallows_a_real_error() -> None:
    assert is_gpu_noise(
        'E1207 04:47:17.481138 9017 server.cc:241] "CudaDriverHelper has not been initialized."'
    )
    assert is_gpu_noise("Error: Failed to initialize NVML")
    for real in (
        'E1207 04:47:33.652493 9017 main.cc:245] "failed to start GRPC service: Unavailable - Socket '
        "'127.0.0.1:9301' already in use \"",
        "E1207 model_lifecycle.cc:641] \"failed to load 'sam_encoder' version 1: Internal: ImportError\"",
        "| sam_encoder | 1 | UNAVAILABLE: Internal: out of memory |",
    ):
        assert not is_gpu_noise(real)


# ----------------------------------------------------------------------- the banner (item 9)


def test_the_random_weights_banner_speaks_the_users_command() -> None:
    manifest = {"model_type": "tiny-test"}
    direct = random_weights_banner(manifest, 0, Path("my_repo"), via_make=False)
    assert "sam-triton export --model-type vit_b --repository my_repo" in direct
    assert "make serve" not in direct
    via_make = random_weights_banner(manifest, 0, Path("model_repository"), via_make=True)
    assert "make serve CHECKPOINT=/path/sam_vit_b_01ec64.pth MODEL=vit_b" in via_make
    for banner in (direct, via_make):
        assert "RANDOM WEIGHTS - MASKS ARE MEANINGLESS" in banner
        assert len({len(line) for line in banner.splitlines()}) == 1, "a closed box"


# ------------------------------------------------------------------------ noise (item 9)


def test_openvino_sends_no_telemetry_and_forks_nothing(tmp_path: Path) -> None:
    """`import openvino` starts OpenVINO's telemetry: it wrote ~/intel/ and forked a sender, which
    made gRPC log "fork_posix.cc ... skipping fork() handlers" in bench's onnxruntime baseline."""
    probe = (
        "import os, sys, time\n"
        "import sam_triton_server.backend.openvino_session\n"
        "import openvino\n"
        "forks = []\n"
        "os.register_at_fork(before=lambda: forks.append(1))\n"
        "time.sleep(1.0)\n"  # the sender ran on a thread pool shortly after the import
        "print(len(forks), sys.modules.get('openvino_telemetry') is not None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "False"]
    assert not (tmp_path / "intel").exists(), "nothing written to the user's home"

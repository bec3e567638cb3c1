"""docker/: what a first `docker compose up` and a first pod would trip over, checked without
Docker (there is no engine here; docs/serving/gpu.md lists what only a GPU host
can show).

- compose passes every setting the entrypoint reads, and no bind mount can resolve to a folder
  Docker would create empty (relative paths are relative to docker/);
- the entrypoint, as PID 1 (a pod's container has no init), stops its export on SIGTERM;
- the image keeps NVIDIA's entrypoint, serves the Python-backend models with onnxruntime's GPU
  build and takes TensorRT's wheels from PyPI only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
# Set by the Dockerfile and not meant to change (REPOSITORY), or another name for one that is
# passed (SAM_TRITON_API_KEY is API_KEY's).
NOT_PASSED = {"REPOSITORY", "SAM_TRITON_API_KEY"}


def compose_service() -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"][
        "sam-triton"
    ]
    return service


def test_compose_passes_every_setting_the_entrypoint_reads() -> None:
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", ENTRYPOINT.read_text()))
    assert {"ALLOW_INSECURE", "PUBLISHED_HOST", "API_KEY", "CHECKPOINT"} <= read
    environment = compose_service()["environment"]
    assert read - NOT_PASSED - set(environment) == set()
    # Each is the caller's variable of the same name (or a documented one: HOST, CHECKPOINT_FILE).
    assert environment["ALLOW_INSECURE"] == "${ALLOW_INSECURE:-0}"


def test_no_bind_mount_resolves_to_a_folder_docker_would_create() -> None:
    """``${VAR:-default}`` defaults resolve against docker/ (the compose file's folder) and must
    exist there; ``${VAR:?message}`` makes compose refuse to start without the variable."""
    service = compose_service()
    assert service["init"] is True  # signals reach the entrypoint
    binds = [v.split(":")[0] if not v.startswith("${") else v[: v.index("}") + 1] for v in service["volumes"]]
    checked = 0
    for source in binds:
        match = re.fullmatch(r"\$\{([A-Z_]+)(:-|:\?)(.*)\}", source)
        if match is None:
            continue  # a named volume
        name, kind, rest = match.groups()
        checked += 1
        if kind == ":?":
            assert rest, f"{name}: say what to set"
        else:
            assert (DOCKER / rest).is_dir(), f"{name} defaults to {rest}, missing under docker/"
    assert checked == 2
    assert re.search(r"CHECKPOINT_DIR:\?", " ".join(service["volumes"]))  # no default checkpoint folder


def test_the_image_keeps_nvidias_entrypoint_and_installs_gpu_runtimes_from_pypi() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.*)$", dockerfile, re.MULTILINE)
    assert yaml.safe_load(entrypoint) == [
        "/opt/nvidia/nvidia_entrypoint.sh",
        "/usr/local/bin/sam-triton-entrypoint",
    ]
    runs = " ".join(re.findall(r"^RUN (.*?)(?<!\\)$", dockerfile, re.MULTILINE | re.DOTALL))
    assert "pip uninstall -y onnxruntime" in runs and "${ONNXRUNTIME_GPU}" in runs
    assert re.search(r"ARG ONNXRUNTIME_GPU=onnxruntime-gpu==\d", dockerfile)
    # tensorrt-cu12's setup.py runs pip against pypi.nvidia.com unless this is set.
    assert "NVIDIA_TENSORRT_DISABLE_INTERNAL_PIP=1 python3 -m pip install" in runs
    assert "--extra-index-url" not in dockerfile and "pypi.nvidia.com" not in dockerfile


def _root_pid_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    return (
        subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode
        == 0
    )


@pytest.mark.skipif(
    not _root_pid_namespaces(), reason="needs unshare --pid (root) to run the entrypoint as PID 1"
)
def test_the_entrypoint_as_pid_1_stops_its_export_on_sigterm(tmp_path: Path) -> None:
    """The entrypoint is PID 1 of a new PID namespace, as in a pod: SIGTERM from outside must
    stop the (here: endless) export at once, not after the grace period's SIGKILL."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "export.log"
    fake = bin_dir / "sam-triton"
    fake.write_text(
        "#!/bin/bash\n"
        f"trap 'echo terminated >> {log}; exit 143' TERM\n"
        f'echo "started $1" >> {log}\n'
        "while true; do sleep 0.1; done\n"
    )
    fake.chmod(0o755)
    checkpoint = tmp_path / "sam.pth"
    checkpoint.write_bytes(b"weights")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        **{"CHECKPOINT": str(checkpoint), "MODEL_TYPE": "vit_b", "REPOSITORY": str(tmp_path / "models")},
        **{"TARGET": "onnxruntime", "PRECISION": "fp32", "VERIFY": "0", "ALLOW_INSECURE": "0"},
    }
    launcher = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "bash", str(ENTRYPOINT), "--export-only"], env=env
    )
    try:
        deadline = time.monotonic() + 20
        while not (log.exists() and "started export" in log.read_text()):
            assert time.monotonic() < deadline, "the export never started"
            time.sleep(0.05)
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        (init,) = [int(pid) for pid in children]  # bash, PID 1 inside the namespace
        os.kill(init, signal.SIGTERM)
        assert launcher.wait(timeout=5) != 0  # stopped, and not reported as a finished export
        assert "terminated" in log.read_text()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()

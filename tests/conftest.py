"""Session fixtures: a seeded tiny-test checkpoint file, exported through the user's code
path, served by a real tritonserver on free ports (once per session, always torn down)."""

from __future__ import annotations

import os

# Before anything imports grpc: this process starts tritonserver and Envoy (fork, then exec at
# once) while earlier tests' gRPC channels are still alive, and gRPC's fork handlers then wait
# in the parent for gRPC's own threads to go idle - one run hung there for good in
# test_replicas_e2e's start. Children that exec at once need no fork handlers (gRPC's advice).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import free_ports

if TYPE_CHECKING:
    from sam_triton_server.launcher.process import TritonProcess

TINY_SEED = 1234
SAM2_MODEL_TYPE = "sam2.1-tiny-test"
SAM2_SEED = 21


@dataclass(frozen=True)
class ServedTriton:
    process: TritonProcess
    repository: Path
    grpc_port: int
    http_port: int
    metrics_port: int

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        """Stop the server; one that had died meanwhile fails the teardown with the end of its
        log (a shared server's crash otherwise shows only as its users' refused connections)."""
        died = self.process.returncode
        self.process.stop()
        if died is not None:
            tail = "\n".join(list(self.process.log_tail)[-80:])
            pytest.fail(f"tritonserver on {self.repository} died with status {died} during the run:\n{tail}")


def start_triton(repository: Path, **options: Any) -> ServedTriton:
    """A ready tritonserver on ``repository`` (``options``: more ServerOptions fields); the
    caller stops ``.process``."""
    from sam_triton_server.launcher.process import ServerOptions, TritonProcess

    grpc_port, http_port, metrics_port = free_ports(3)
    server_options = ServerOptions(
        repository=repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        host="127.0.0.1",
        **options,
    )
    process = TritonProcess(server_options)
    process.start()
    try:
        process.wait_ready(timeout=600)
    except BaseException:
        process.stop()
        raise
    return ServedTriton(process, repository, grpc_port, http_port, metrics_port)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sam_triton_export.model_builder import save_random_checkpoint

    return save_random_checkpoint(
        "tiny-test", tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth", seed=TINY_SEED
    )


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """``sam-triton export`` of the tiny checkpoint, verify included: the command a user runs
    (test_export.py checks what it wrote, so the suite exports tiny-test once)."""
    from sam_triton.cli import main

    repository = tmp_path_factory.mktemp("repo") / "model_repository"
    command = ["export", "--model-type", "tiny-test", "--checkpoint", str(tiny_checkpoint)]
    assert main([*command, "--repository", str(repository)]) == 0
    return repository


@pytest.fixture(scope="session")
def triton_server(tiny_repository: Path) -> Iterator[ServedTriton]:
    served = start_triton(tiny_repository)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded SAM 2.1 small-test checkpoint in the official format (``{"model": state_dict}``)."""
    import torch
    from sam_triton_export.family_sam2 import save_random_checkpoint

    path = save_random_checkpoint(
        SAM2_MODEL_TYPE, tmp_path_factory.mktemp("sam2") / "sam2.1_test.pt", SAM2_SEED
    )
    # Random weights give the single-mask token's logits so close to 0 that its stability score
    # is always low and the dynamic multimask fallback always taken; sharpening that token's
    # output (x30) makes some prompts stable, so parity covers both sides of the fallback.
    saved = torch.load(path, map_location="cpu", weights_only=True)
    for part in ("weight", "bias"):
        saved["model"][f"sam_mask_decoder.output_hypernetworks_mlps.0.layers.2.{part}"] *= 30
    torch.save(saved, path)
    return path


@pytest.fixture(scope="session")
def sam2_export(tmp_path_factory: pytest.TempPathFactory, sam2_checkpoint: Path) -> Any:
    """That checkpoint exported (and verified) once for the whole run: ``sam2_server`` serves it."""
    from sam_triton_export.pipeline import export_repository

    repository = tmp_path_factory.mktemp("sam2repo") / "model_repository"
    return export_repository(SAM2_MODEL_TYPE, repository, checkpoint=sam2_checkpoint, log=lambda _: None)


@pytest.fixture(scope="session")
def sam2_server(sam2_export: Any) -> Iterator[ServedTriton]:
    """That export served once for the run: SAM 2's image models, automask and video tracking
    (tests/test_sam2.py, tests/test_video_e2e.py)."""
    served = start_triton(sam2_export.repository)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="session")
def tiny_sam(tiny_checkpoint: Path) -> Any:
    """The reference segment_anything Sam, loaded from the same file the server was exported from."""
    from sam_triton_export.model_builder import build_sam

    return build_sam("tiny-test", tiny_checkpoint)

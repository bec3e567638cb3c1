"""``python -m sam_triton_bench.verify_served`` against a real tritonserver: what a first GPU
node runs to compare its TensorRT plans (or native backends) with the PyTorch reference.

Here the server is the bundled CPU one on the python-onnxruntime target; the comparison is the
same on any target. It passes on the weights the repository was exported from, on both paths
(sam_session, and sam_encoder + sam_decoder), a mask-only prompt included, and fails on others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_SEED, ServedTriton


@pytest.mark.parametrize("server_embeddings", [False, True], ids=["stateless", "session"])
def test_the_served_models_match_the_reference(
    triton_server: ServedTriton, tiny_sam: Any, server_embeddings: bool
) -> None:
    from sam_triton_bench.verify_served import verify_server

    report = verify_server(
        triton_server.grpc_url, tiny_sam, server_embeddings=server_embeddings, log=lambda _: None
    )
    assert report.passed, report.format()
    assert any("mask_input alone" in case.name for case in report.cases)
    assert report.embedding_max_abs < 1e-3 * report.embedding_range


def test_other_weights_fail_and_the_command_says_so(
    triton_server: ServedTriton, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam_triton_bench.verify_served import main

    url = ["--url", triton_server.grpc_url, "--model-type", "tiny-test", "--path", "stateless"]
    assert main([*url, "--random-weights", "--seed", str(TINY_SEED + 1)]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main([*url, "--checkpoint", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "through sam_encoder + sam_decoder" in out and "split decoder" not in out


def test_an_unreachable_server_is_refused(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sam_triton_bench.verify_served import main

    from tests.helpers import free_ports

    (port,) = free_ports(1)
    argv = ["--url", f"127.0.0.1:{port}", "--model-type", "tiny-test", "--checkpoint", str(tiny_checkpoint)]
    assert main([*argv, "--timeout", "5"]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err

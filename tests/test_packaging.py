"""A plain install is the client SDK: it imports, and needs, no torch/onnx/Triton."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

HEAVY = {"torch", "torchvision", "segment-anything", "onnx", "onnxruntime", "nvidia-pytriton", "tensorrt"}

# Importing the SDK (and the CLI's parser) with the heavy packages made unimportable.
BLOCKED_IMPORT = """
import sys
for name in ("torch", "torchvision", "segment_anything", "onnx", "onnxruntime", "tritonclient", "pytriton"):
    sys.modules[name] = None
import sam_triton
from sam_triton import SamClient, AsyncSamClient, RemoteSamPredictor, RemoteAutomaticMaskGenerator
from sam_triton.cli import build_parser
build_parser()
print("ok")
"""


def test_base_requirements_pull_nothing_heavy() -> None:
    base = [Requirement(r) for r in requires("sam-triton") or [] if "extra ==" not in r]
    assert base, "sam-triton's metadata lists no requirements"
    assert not {r.name.lower() for r in base} & HEAVY


def test_sdk_and_cli_import_without_torch_or_onnxruntime() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

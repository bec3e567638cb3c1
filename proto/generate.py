"""Compile the .proto files into each package's proto/ folder (messages and .pyi stubs):
proto/<package>/proto/x.proto becomes <folder>/<package>/proto/x_pb2.py, where <folder> is the
package's top-level folder (the KServe protocol is the SDK's, the automask messages are shared).

The gRPC service stub is hand-written (sam_triton/proto/inference_pb2_grpc.py; see
inference.proto for why), so protoc generates messages only.

The generated files are committed so a plain ``pip install .`` needs no protoc;
tests/test_proto.py regenerates them into a temporary folder and fails on any drift.
Run with ``make proto`` (or ``python proto/generate.py [OUT_ROOT]``, default: the repository).
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent
PACKAGE_FOLDERS = {"sam_triton": "client", "sam_triton_common": "common"}


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("*/proto/*.proto"))


def generate(out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """Generate the Python modules under ``out_dir/<folder>/<package>/proto``; returns their paths."""
    grpc_include = Path(protoc.__file__).parent / "_proto"
    generated: list[Path] = []
    for proto in proto_files():
        package = proto.relative_to(PROTO_ROOT).parts[0]
        root = out_dir / PACKAGE_FOLDERS[package]
        (root / package / "proto").mkdir(parents=True, exist_ok=True)
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{grpc_include}",
            f"--python_out={root}",
            f"--pyi_out={root}",
            str(proto.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        generated.extend(
            root / proto.relative_to(PROTO_ROOT).with_name(f"{proto.stem}_pb2{suffix}")
            for suffix in (".py", ".pyi")
        )
    return sorted(generated)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(out):
        print(path)

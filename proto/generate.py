"""Compile the .proto files into client/sam_triton/proto/ (messages and their .pyi stubs).

The gRPC service stub is hand-written (sam_triton/proto/inference_pb2_grpc.py; see
inference.proto for why), so protoc generates messages only.

The generated files are committed so a plain ``pip install .`` needs no protoc;
tests/test_proto.py regenerates them into a temporary folder and fails on any drift.
Run with ``make proto`` (or ``python proto/generate.py [OUT_DIR]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "client"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "sam_triton" / "proto").glob("*.proto"))


def generate(out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """Generate the Python modules under ``out_dir/sam_triton/proto``; returns their paths."""
    target = out_dir / "sam_triton" / "proto"
    target.mkdir(parents=True, exist_ok=True)
    grpc_include = Path(protoc.__file__).parent / "_proto"
    for proto in proto_files():
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{grpc_include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            str(proto.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    stems = [proto.stem for proto in proto_files()]
    return sorted(target / f"{stem}_pb2{suffix}" for stem in stems for suffix in (".py", ".pyi"))


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(out):
        print(path)

"""Compile the .proto files into client/sam_triton/proto/ (messages, .pyi stubs, gRPC stubs).

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
        if "\nservice " in proto.read_text():
            args.insert(-1, f"--grpc_python_out={out_dir}")
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    return sorted(p for p in target.iterdir() if p.name.endswith((".py", ".pyi")) and p.name != "__init__.py")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(out):
        print(path)

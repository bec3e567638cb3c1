"""The exported encoder on each CPU runtime, and the PyTorch reference, interleaved in one run.

    .venv/bin/python benchmarks/encoder_runtimes.py /tmp/vitb --model-type vit_b --seed 0

    # the reduced precisions tried for the CPU encoder: OpenVINO bf16 (export --precision bf16)
    # and int8 weights (ONNX Runtime's dynamic quantization of every MatMul), CPU time too
    .venv/bin/python benchmarks/encoder_runtimes.py /tmp/vitb --no-torch --reduced --rounds 2

Rounds run onnxruntime, OpenVINO, torch, onnxruntime, ... on the same 1024x1024 input, so a
shared machine's slow spells land on all three (BENCHMARKS.md). ``--seed`` must be the seed
the repository was exported with for the torch row to use the same weights.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sam_triton_server.backend.ort import Session, create_session


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("repository")
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--reduced", action="store_true", help="add OpenVINO bf16 and int8-weight rows")
    args = parser.parse_args()
    path = f"{args.repository}/sam_encoder/1/model.onnx"
    rng = np.random.default_rng(0)
    feed = {
        "image": rng.integers(0, 256, (1, 1024, 1024, 3), dtype=np.uint8),
        "input_size": np.array([[1024, 1024]], np.int32),
    }
    sessions = {runtime: create_session(path, cpu_runtime=runtime) for runtime in ("onnxruntime", "openvino")}
    if args.reduced:
        sessions.update(reduced_precision_sessions(path))
    calls = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
    outputs = {name: call()[0] for name, call in calls.items()}
    for name, output in outputs.items():
        diff = np.abs(output - outputs["onnxruntime"])
        print(f"{name} vs onnxruntime: max abs difference {diff.max():.3g}, mean {diff.mean():.3g}")
    if not args.no_torch:
        import torch
        from sam_triton_export.model_builder import build_sam

        sam = build_sam(args.model_type, None, random_seed=args.seed)
        x = sam.preprocess(torch.from_numpy(feed["image"][0]).permute(2, 0, 1).float())[None]

        def reference() -> None:
            with torch.no_grad():
                sam.image_encoder(x)

        calls["torch"] = reference
        reference()
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            call()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    base = np.median(times["onnxruntime"])
    for name, values in times.items():
        median = float(np.median(values))
        rounds = " ".join(f"{v:.2f}" for v in values)
        cpu_median = float(np.median(cpu[name]))
        print(
            f"{name:12s} median {median:6.2f} s (rounds {rounds}); / onnxruntime {median / base:.2f};"
            f" CPU {cpu_median:.2f} s"
        )


def reduced_precision_sessions(path: str) -> dict[str, Session]:
    """OpenVINO computing in bf16, and the graph with int8 MatMul weights (activations
    quantized at run time) on ONNX Runtime and on OpenVINO."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8 = Path(tempfile.mkdtemp()) / "encoder_int8.onnx"
    quantize_dynamic(path, int8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return {
        "openvino-bf16": create_session(path, cpu_runtime="openvino", cpu_precision="bf16"),
        "ort-int8": create_session(int8, cpu_runtime="onnxruntime"),
        "openvino-int8": create_session(int8, cpu_runtime="openvino"),
    }


if __name__ == "__main__":
    main()

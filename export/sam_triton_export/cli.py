"""``sam-triton export`` and ``sam-triton verify``.

Registering imports nothing heavy; torch, onnx and segment_anything load inside the handlers.
Exit codes: 0 success, 1 verification outside tolerance, 2 refused / bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sam_triton_export.model_types import ALL_MODEL_TYPES, AnyModelType

MODEL_TYPES = tuple(ALL_MODEL_TYPES)
TARGETS = ("python-onnxruntime", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")  # pipeline.EXPORT_PRECISIONS, without importing it here


def _add_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-type",
        choices=MODEL_TYPES,
        help="SAM variant (required, except with a Hugging Face directory: its config.json names it)",
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint",
        type=Path,
        help="official SAM (.pth) or SAM 2 (.pt) checkpoint, or a Hugging Face transformers SamModel "
        "or Sam2VideoModel directory (config.json + model.safetensors or its shards)",
    )
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="use randomly initialised weights (masks are meaningless; for tests and demos)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    parser.add_argument("--repository", type=Path, required=True, help="Triton model repository directory")
    parser.add_argument(
        "--name",
        type=_model_name,
        help="the model's name in a repository of several: its Triton models are NAME.sam_encoder, "
        "NAME.sam_decoder, ... and the others there are left alone; clients choose it with "
        "model=NAME / --model NAME (default: none, the one-model layout)",
    )


def _model_name(text: str) -> str:
    from sam_triton_common.contract import check_model_name

    try:
        return check_model_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(subparsers: Any) -> None:
    export = subparsers.add_parser(
        "export",
        help="export SAM to ONNX/TensorRT and write a verified Triton model repository",
        description="Build SAM from a checkpoint, export encoder and decoder, verify them against "
        "PyTorch and write the Triton model repository.",
    )
    _add_weights(export)
    export.add_argument(
        "--target",
        choices=TARGETS,
        default="python-onnxruntime",
        help="python-onnxruntime runs everywhere (default); onnxruntime and tensorrt "
        "are Triton's native backends in the NGC container",
    )
    export.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="default: fp32 (exact); fp16: the graphs in half precision, for GPUs; bf16: the image "
        "encoder computes in bfloat16 on a CPU with AVX-512 BF16 or AMX (OpenVINO), its loss against "
        "fp32 verified (docs/serving/export.md)",
    )
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--max-prompts", type=int, default=64, help="prompts per decoder request")
    export.add_argument("--max-points", type=int, default=64, help="points per prompt")
    export.add_argument("--max-batch", type=int, default=8, help="largest Triton batch per model")
    export.add_argument("--instances", type=int, default=1, help="model instances per model")
    export.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME=N",
        help="a queue bound (repeatable; `sam-triton serve --queue` overrides it per run): "
        "sam_encoder, sam_decoder, sam_session, sam_automask, embed_workers, embed_queue, "
        "sam_video, video_sessions (SAM 2)",
    )
    export.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the comparison with the PyTorch reference",
    )
    export.add_argument(
        "--if-changed",
        action="store_true",
        help="do nothing when the repository already holds this exact export",
    )
    export.set_defaults(handler=run_export)

    verify = subparsers.add_parser(
        "verify",
        help="compare an exported repository with the PyTorch reference",
        description="Run the repository's ONNX models and segment_anything's SamPredictor on sample "
        "images and prompts; exit 1 beyond the tolerances in docs/serving/export.md.",
    )
    _add_weights(verify)
    verify.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="the precision to run and its tolerances (default: the precision recorded in export.json)",
    )
    verify.add_argument(
        "--video",
        action="store_true",
        help="SAM 2: also compare the video tracking graphs (sam_video) with sam2's modules "
        "(memory attention at the model's full size: tens of seconds on a CPU)",
    )
    verify.set_defaults(handler=run_verify)


def _weights(args: argparse.Namespace) -> tuple[Path | None, int | None]:
    if args.checkpoint is None and not args.random_weights:
        raise SystemExit(
            f"sam-triton {args.command}: error: give --checkpoint PATH, or --random-weights "
            "[--seed N] to use randomly initialised weights on purpose"
        )
    return args.checkpoint, (args.seed if args.random_weights else None)


def _model_type(args: argparse.Namespace) -> AnyModelType:
    """``--model-type``, or the type a Hugging Face directory's config.json names (CheckpointError
    when it names none we serve)."""
    from sam_triton_export.hf_checkpoints import read_model_type
    from sam_triton_export.model_types import resolve_model_type

    if args.model_type is not None:
        return resolve_model_type(args.model_type)
    if args.checkpoint is not None and args.checkpoint.is_dir():
        return read_model_type(args.checkpoint)
    raise SystemExit(_fail("give --model-type (only a Hugging Face model directory names its own type)"))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_export(args: argparse.Namespace) -> int:
    from sam_triton_server.launcher.queues import parse_queue_overrides, queue_limits

    from sam_triton_export.checkpoints import CheckpointError
    from sam_triton_export.pipeline import ExportError, VerifyFailed, export_repository

    checkpoint, seed = _weights(args)
    try:
        spec = _model_type(args)  # once, here; the exporter passes the object on
        queues = queue_limits(parse_queue_overrides(args.queue))
        result = export_repository(
            spec,
            args.repository,
            name=args.name,
            checkpoint=checkpoint,
            random_seed=seed,
            target=args.target,
            precision=args.precision,
            opset=args.opset,
            max_batch=args.max_batch,
            max_prompts=args.max_prompts,
            max_points=args.max_points,
            instances=args.instances,
            queues=queues,
            verify=args.verify,
            if_changed=args.if_changed,
        )
    except VerifyFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (CheckpointError, ExportError, ValueError) as e:
        return _fail(str(e))
    if not result.skipped:
        for path, size in result.files.items():
            print(f"  {path}: {size / 1e6:.1f} MB")
        print(
            f"exported {spec.name}{f' as {args.name!r}' if args.name else ''} ({args.precision}, "
            f"{args.target}) to {args.repository} in {sum(result.timings.values()):.1f} s"
        )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from sam_triton_common.contract import DECODER_MODEL, ENCODER_MODEL, SAM2, read_export_info, served_name

    from sam_triton_export.checkpoints import CheckpointError
    from sam_triton_export.family_sam2 import build_sam2_model
    from sam_triton_export.family_sam2 import verify_models as verify_sam2
    from sam_triton_export.model_builder import build_sam
    from sam_triton_export.pipeline import ExportError, check_precision
    from sam_triton_export.repository import model_file
    from sam_triton_export.verify import verify_models

    checkpoint, seed = _weights(args)
    try:
        spec = _model_type(args)
    except CheckpointError as e:
        return _fail(str(e))
    info = read_export_info(args.repository, args.name)
    if info is not None and info.get("model_type") != spec.name:
        print(
            f"warning: {args.repository} was exported from {info.get('model_type')}, "
            f"verifying against {spec.name}",
            file=sys.stderr,
        )
    encoder, decoder = (
        model_file(args.repository, served_name(args.name, m)) for m in (ENCODER_MODEL, DECODER_MODEL)
    )
    precision = args.precision or str((info or {}).get("precision", "fp32"))
    if args.video and spec.family is not SAM2:
        return _fail(f"--video: video tracking is for SAM 2 models, not {spec.name}")
    try:
        check_precision(spec, "python-onnxruntime", precision)
        if spec.family is SAM2:
            report = verify_sam2(
                encoder, decoder, build_sam2_model(spec, checkpoint, random_seed=seed), precision=precision
            )
        else:
            report = verify_models(
                encoder, decoder, build_sam(spec, checkpoint, random_seed=seed), precision=precision
            )
    except (CheckpointError, ExportError, FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    print(report.format())
    if not args.video:
        return 0 if report.passed else 1
    return _verify_video(args, spec, checkpoint, seed, image_passed=report.passed)


def _verify_video(
    args: argparse.Namespace,
    spec: AnyModelType,
    checkpoint: Path | None,
    seed: int | None,
    *,
    image_passed: bool,
) -> int:
    from sam_triton_common.contract import VIDEO_MODEL, served_name

    from sam_triton_export.family_sam2_video import build_sam2_video_model, verify_video_graphs
    from sam_triton_export.repository import model_dir

    directory = model_dir(args.repository, served_name(args.name, VIDEO_MODEL))
    try:
        report = verify_video_graphs(directory, build_sam2_video_model(spec, checkpoint, random_seed=seed))
    except FileNotFoundError as e:
        return _fail(str(e))
    print("video tracking graphs against sam2's modules (largest differences):")
    print("\n".join(report.lines()))
    print("video graphs: " + ("passed" if report.passed() else "FAILED"))
    return 0 if image_passed and report.passed() else 1

"""A running server's answers vs the PyTorch reference (the ``SamPredictor`` of the model's
package: segment_anything's ``SamPredictor``, mobile_sam's, or efficientsam's for
EfficientViT-SAM).

``sam-triton verify`` compares the ONNX files an export wrote. What a server runs can differ:
TensorRT plans (built from those files, only on a GPU, in reduced precision where TensorRT
chooses), the native backends, onnxruntime's GPU providers. This sends the cases and applies
the tolerances of ``sam-triton verify`` (docs/serving/export.md) through the SDK, as a user would,
on either path: the stateless one (``sam_encoder`` then ``sam_decoder``: the plans) or
``sam_session`` (the encoder by BLS, the prompt decoder in the Python backend). A prompt of
``mask_input`` alone (no points) is one of the cases.

    python -m sam_triton_bench.verify_served --url HOST:8001 --model-type vit_b \\
        --checkpoint sam_vit_b_01ec64.pth [--precision fp16] [--path stateless|session|both]

Exit codes: 0 within tolerance, 1 outside, 2 refused (bad arguments, server unreachable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sam_triton_common.contract import DECODER_MODEL, ENCODER_MODEL, SESSION_MODEL
from sam_triton_export.verify import (
    TOLERANCES,
    Array,
    CaseResult,
    Prompt,
    VerifyReport,
    mask_iou,
    prompts_for,
    sample_images,
)

if TYPE_CHECKING:
    from sam_triton import RemoteSamPredictor
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

PATHS = {"stateless": False, "session": True}  # --path -> the SDK's server_embeddings
# The types served by the SAM 1 family (the SDK's RemoteSamPredictor); their references differ.
SAM1_MODEL_TYPES = (
    *("vit_h", "vit_l", "vit_b", "tiny-test"),
    *("mobile_sam", "efficientvit_sam_xl0", "efficientvit_sam_xl1"),
)


def verify_server(
    url: str,
    sam: Sam,
    *,
    precision: str = "fp32",
    server_embeddings: bool = False,
    images: list[Array] | None = None,
    client_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> VerifyReport:
    """Compare the server at ``url`` with ``SamPredictor(sam)`` (the weights it was exported
    from); ``server_embeddings`` picks ``sam_session`` over the stateless models."""
    from sam_triton import RemoteSamPredictor
    from sam_triton_export.model_builder import reference_of

    path = SESSION_MODEL if server_embeddings else f"{ENCODER_MODEL} + {DECODER_MODEL}"
    of_sam = reference_of(sam)
    report = VerifyReport(precision=precision, tolerances=TOLERANCES[precision], reference=of_sam.name)
    report.runtimes = {"served": f"{url} through {path}"}
    predictor = of_sam.predictor(sam)
    options = {**(client_options or {}), "server_embeddings": server_embeddings}
    with RemoteSamPredictor(url, **options) as remote:
        for index, image in enumerate(images if images is not None else sample_images()):
            predictor.set_image(image)
            remote.set_image(image)
            reference = predictor.features.detach().cpu().numpy()  # every reference predictor has it
            served = remote.get_image_embedding()
            report.embedding_max_abs = max(report.embedding_max_abs, float(np.abs(served - reference).max()))
            report.embedding_range = max(report.embedding_range, float(reference.max() - reference.min()))
            report.cases.extend(_served_cases(predictor, remote))
            log(f"  image {index + 1}: {image.shape[0]}x{image.shape[1]} checked through {path}")
    return report


def _served_cases(predictor: SamPredictor, remote: RemoteSamPredictor) -> Iterator[CaseResult]:
    h, w = predictor.original_size
    cases = [*prompts_for(h, w), Prompt("mask_input alone (no points)", refine=True, multimask=False)]
    best: Array | None = None  # the reference's best low-res logits of the first case
    for prompt in cases:
        call: dict[str, Any] = {
            "point_coords": prompt.points,
            "point_labels": prompt.labels,
            "box": prompt.box,
            "mask_input": best if prompt.refine else None,
            "multimask_output": prompt.multimask,
        }
        ref_masks, ref_scores, ref_logits = predictor.predict(**call)
        masks, scores, logits = remote.predict(**call)
        if best is None:
            best = ref_logits[int(np.argmax(ref_scores))][None].astype(np.float32)
        yield CaseResult(
            name=f"{h}x{w} {prompt.name}",
            score_max_abs=float(np.abs(scores - ref_scores).max()),
            logits_max_abs=float(np.abs(logits - ref_logits).max()),
            logits_range=float(ref_logits.max() - ref_logits.min()),
            ious=[mask_iou(masks[k], ref_masks[k]) for k in range(ref_masks.shape[0])],
        )


def _report_lines(report: VerifyReport) -> str:
    # No split-decoder comparison happens here (that is `sam-triton verify`'s, on the files).
    return "\n".join(line for line in report.format().splitlines() if "split decoder" not in line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sam_triton_bench.verify_served",
        description="Compare a running sam-triton server with segment_anything's SamPredictor on the "
        "weights it was exported from (TensorRT plans, native backends and GPU providers included).",
    )
    parser.add_argument("--url", required=True, help="the server's gRPC endpoint HOST:PORT")
    parser.add_argument("--model-type", required=True, choices=SAM1_MODEL_TYPES, help="SAM variant")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="the checkpoint the server was exported from")
    weights.add_argument("--random-weights", action="store_true", help="a --random-weights export")
    parser.add_argument("--seed", type=int, default=0, help="its --seed (default %(default)s)")
    parser.add_argument("--precision", choices=tuple(TOLERANCES), default="fp32", help="tolerances to apply")
    parser.add_argument(
        "--path", choices=(*PATHS, "both"), default="both", help="which models to check (default %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per call (default %(default)s)")
    args = parser.parse_args(argv)

    from sam_triton_common.errors import SamTritonError
    from sam_triton_export.checkpoints import CheckpointError
    from sam_triton_export.model_builder import build_sam

    try:
        sam = build_sam(
            args.model_type, args.checkpoint, random_seed=args.seed if args.random_weights else None
        )
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    passed = True
    for name in PATHS if args.path == "both" else (args.path,):
        try:  # the API key comes from SAM_TRITON_API_KEY, as for every SDK client
            report = verify_server(
                args.url, sam, precision=args.precision, server_embeddings=PATHS[name],
                client_options={"timeout": args.timeout},
            )  # fmt: skip
        except SamTritonError as error:
            print(f"error: {args.url} ({name}): {error}", file=sys.stderr)
            return 2
        print(_report_lines(report))
        passed = passed and report.passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

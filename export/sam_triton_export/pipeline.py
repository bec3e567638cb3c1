"""``export_repository``: checkpoint -> ONNX (-> TensorRT) -> verified Triton repository."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam_triton_common.contract import (
    IMAGE_FEATURES_FILE,
    PROMPT_DECODER_FILE,
    SAM1,
    SAM2,
    check_model_name,
    export_info_path,
    family_named,
    read_export_info,
    served_name,
    write_export_info,
)
from sam_triton_common.video_contract import TRACKER_CONFIG_FILE, VIDEO_GRAPH_FILES
from sam_triton_server.backend.cpu_precision import BF16, FP32, PrecisionUnsupported, require_cpu_precision
from sam_triton_server.launcher.plans import PLAN_BUILD_KEY, current_build_environment, plans_mismatch
from sam_triton_server.launcher.queues import QueueLimits

from sam_triton_export import family_sam2
from sam_triton_export.checkpoints import CheckpointError, sha256_file
from sam_triton_export.hf_checkpoints import check_directory, directory_sha256
from sam_triton_export.model_types import AnyModelType, resolve_model_type
from sam_triton_export.onnx_common import DEFAULT_OPSET, PRECISIONS, onnx_files
from sam_triton_export.repository import (
    DECODER,
    ENCODER,
    VIDEO,
    RepositoryOptions,
    model_dir,
    model_file,
    write_repository_files,
)
from sam_triton_export.verify import VerifyReport, encoder_cpu_precision

# fp16: the graphs compute in half precision (for GPUs); bf16: the encoder computes in bfloat16
# on the CPU (sam_triton_server.backend.cpu_precision).
EXPORT_PRECISIONS = (*PRECISIONS, BF16)
EXPORT_FORMAT = 3  # bump when the graphs change so --if-changed re-exports old repositories

RANDOM_WEIGHTS_BANNER = (
    "!!! RANDOM WEIGHTS: this repository holds randomly initialised SAM weights (seed {seed}).\n"
    "!!! Its masks are meaningless; pass --checkpoint PATH to serve a real model."
)


class ExportError(Exception):
    """Export refused or failed; the message says what to do."""


class VerifyFailed(ExportError):
    def __init__(self, report: VerifyReport) -> None:
        super().__init__("verify failed: " + "; ".join(report.failures()))
        self.report = report


def check_precision(spec: AnyModelType, target: str, precision: str) -> None:
    """ExportError unless ``precision`` can be exported for ``spec`` and ``target`` and run here.

    bf16 is the image encoder computing in bfloat16 on OpenVINO's CPU plugin, which runs SAM 1's
    encoder (python-onnxruntime target; SAM 2's encoder stays on ONNX Runtime) on a CPU with
    bf16 instructions: anywhere else it would be fp32 under another name, or slow.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    if precision != BF16:
        return
    if spec.family is not SAM1 or target != "python-onnxruntime":
        raise ExportError(
            f"--precision bf16 runs SAM 1 image encoders on OpenVINO (target python-onnxruntime), "
            f"not {spec.name} ({spec.family.name}) with target {target}: use fp32, or fp16 on a GPU"
        )
    try:
        require_cpu_precision(BF16)
    except PrecisionUnsupported as e:
        raise ExportError(f"--precision bf16: {e}") from None


@dataclass
class ExportResult:
    repository: Path
    info: dict[str, Any]
    skipped: bool = False
    files: dict[str, int] = field(default_factory=dict)  # repository-relative path -> bytes
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    verify: VerifyReport | None = None


def weights_description(checkpoint: Path | None, random_seed: int | None) -> dict[str, Any]:
    if checkpoint is not None and checkpoint.is_dir():  # a Hugging Face model directory
        return {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": directory_sha256(checkpoint)}
    if checkpoint is not None:
        return {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": sha256_file(checkpoint)}
    return {"random_seed": random_seed}


def _same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # The same file moved elsewhere is still the same weights: compare content, not path.
    if "checkpoint_sha256" in a or "checkpoint_sha256" in b:
        return a.get("checkpoint_sha256") == b.get("checkpoint_sha256")
    return a.get("random_seed") == b.get("random_seed")


def weight_files(
    repository: Path, target: str, family: str = SAM1.name, name: str | None = None
) -> list[Path]:
    """The weight files of the model exported under ``name`` (None: the unnamed one)."""
    encoder, decoder = served_name(name, ENCODER), served_name(name, DECODER)
    files = [f for m in (encoder, decoder) for f in onnx_files(model_file(repository, m))]
    if family_named(family).split_decoder:
        split = (IMAGE_FEATURES_FILE, PROMPT_DECODER_FILE)
        files += [model_dir(repository, decoder) / file for file in split]
    if target == "tensorrt":
        files += [model_file(repository, m, target) for m in (encoder, decoder)]
    if family_named(family) is SAM2:  # sam_video's tracking graphs and their settings
        video = model_dir(repository, served_name(name, VIDEO))
        files += [f for graph in VIDEO_GRAPH_FILES for f in onnx_files(video / graph)]
        files.append(video / TRACKER_CONFIG_FILE)
    return files


def is_up_to_date(repository: Path, wanted: dict[str, Any], name: str | None = None) -> bool:
    """True when the export.json of model ``name`` describes ``wanted`` exactly and its weight
    files are present."""
    info = read_export_info(repository, name)
    family = wanted["options"].get("family", SAM1.name)
    files = weight_files(repository, wanted["target"], family, name)
    if info is None or not all(p.is_file() for p in files):
        return False
    keys = ("format", "model_type", "precision", "target", "opset", "options")
    if not all(info.get(k) == wanted[k] for k in keys):
        return False
    if not _same_weights(info["weights"], wanted["weights"]):
        return False
    # Plans of another TensorRT or GPU: Triton would refuse to load them.
    return wanted["target"] != "tensorrt" or bool(info.get(PLAN_BUILD_KEY) == wanted[PLAN_BUILD_KEY])


class _Steps:
    """Numbered progress lines with timings: '[2/6] exporting encoder ... 3.1 s'."""

    def __init__(self, total: int, log: Callable[[str], None], timings: dict[str, float]) -> None:
        self.total, self.index, self.log, self.timings = total, 0, log, timings

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.index += 1
        self.log(f"[{self.index}/{self.total}] {name} ...")
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        self.log(f"[{self.index}/{self.total}] {name}: done in {self.timings[name]:.1f} s")


def export_repository(
    model_type: str | AnyModelType,
    repository: Path | str,
    *,
    name: str | None = None,
    checkpoint: Path | str | None = None,
    random_seed: int | None = None,
    target: str = "python-onnxruntime",
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    max_batch: int = 8,
    max_prompts: int = 64,
    max_points: int = 64,
    instances: int = 1,
    queues: QueueLimits | None = None,
    verify: bool = True,
    if_changed: bool = False,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Build SAM, export encoder and decoder, write a complete Triton repository, verify it.

    Exactly one of ``checkpoint`` and ``random_seed`` must be given: random weights are never
    implicit. Raises CheckpointError (bad checkpoint), ExportError (refused, TensorRT missing)
    or VerifyFailed (outputs beyond docs/serving/export.md tolerances; export.json is then not written).

    ``name``: add the model to ``repository`` under its own Triton names (``NAME.sam_encoder``
    ...; ``sam_triton_common.contract.served_name``) and leave every other model there alone;
    None writes the unnamed layout, the one a one-model repository has.
    """
    from sam_triton_export.tensorrt import tensorrt_unavailable_reason

    repository = Path(repository)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    # The model type is resolved here, once; the object is passed on and its family decides
    # every step below.
    spec = resolve_model_type(model_type)
    family = spec.family
    if name is not None:
        check_model_name(name)
    if checkpoint is None and random_seed is None:
        raise ExportError(
            "no weights given: pass --checkpoint PATH (an official SAM .pth file), or "
            "--random-weights --seed N to export randomly initialised weights on purpose"
        )
    if checkpoint is not None and random_seed is not None:
        raise ExportError("give either a checkpoint or --random-weights, not both")
    check_precision(spec, target, precision)
    if checkpoint is not None and checkpoint.is_dir():  # before anything is written
        check_directory(checkpoint, spec)
    elif checkpoint is not None and not checkpoint.is_file():
        raise CheckpointError(f"checkpoint file not found: {checkpoint}")
    queues = queues or QueueLimits()
    options = RepositoryOptions(
        target,
        max_batch,
        max_prompts,
        max_points,
        instances,
        queues,
        family.name,
        name,
        cpu_precision=encoder_cpu_precision(precision),
    )
    graph_precision = FP32 if precision == BF16 else precision  # bf16 is set at run time
    if family is SAM2 and target != "python-onnxruntime":
        raise ExportError(f"{spec.name}: only --target python-onnxruntime serves SAM 2 models so far")
    if target == "tensorrt" and (reason := tensorrt_unavailable_reason()) is not None:
        raise ExportError(f"cannot export --target tensorrt: {reason}")

    wanted: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "model_type": spec.name,
        "weights": weights_description(checkpoint, random_seed),
        "precision": precision,
        "target": target,
        "opset": opset,
        "options": options.to_dict(),
    }
    if target == "tensorrt":  # what the plans are built for (sam_triton_server.launcher.plans)
        wanted[PLAN_BUILD_KEY] = current_build_environment()
        held = read_export_info(repository, name) if if_changed else None
        if held is not None and held.get("target") == "tensorrt" and wanted[PLAN_BUILD_KEY] is not None:
            mismatch = plans_mismatch(held.get(PLAN_BUILD_KEY), wanted[PLAN_BUILD_KEY])
            if mismatch is not None:
                log(f"{repository} holds {mismatch}: rebuilding them")
    if random_seed is not None:
        log(RANDOM_WEIGHTS_BANNER.format(seed=random_seed))
    result = ExportResult(repository=repository, info=wanted)
    where = f"{repository}" + (f" (model {name!r})" if name else "")
    if if_changed and is_up_to_date(repository, wanted, name):
        write_repository_files(repository, options)  # configs follow the generator, cheaply
        result.skipped = True
        result.info = read_export_info(repository, name) or wanted
        log(f"{where} already holds this export ({spec.name}, {precision}, {target}); skipping")
        return result

    total = 4 + int(verify) + int(target == "tensorrt") + int(family is SAM2)
    steps = _Steps(total, log, result.timings)
    with steps.step(
        f"loading {spec.name} " + (f"from {checkpoint}" if checkpoint else f"random seed {random_seed}")
    ):
        if family is SAM2:
            sam = family_sam2.build_sam2_model(spec, checkpoint, random_seed=random_seed)
        else:
            from sam_triton_export.model_builder import build_sam

            sam = build_sam(spec, checkpoint, random_seed=random_seed)
    # A half-written repository must not look complete to --if-changed.
    export_info_path(repository, name).unlink(missing_ok=True)
    encoder, decoder = options.served(ENCODER), options.served(DECODER)
    with steps.step(f"exporting image encoder to ONNX ({precision})"):
        from sam_triton_export.onnx_encoder import export_encoder

        sam2_or_1 = family_sam2.export_encoder if family is SAM2 else export_encoder
        sam2_or_1(sam, model_file(repository, encoder), opset=opset, precision=graph_precision)
    with steps.step(f"exporting prompt encoder + mask decoder to ONNX ({precision})"):
        if family is SAM2:
            family_sam2.export_decoder(
                sam, model_file(repository, decoder), opset=opset, precision=graph_precision
            )
        else:
            from sam_triton_export.onnx_decoder import export_decoder, export_session_decoder

            export_decoder(sam, model_file(repository, decoder), opset=opset, precision=graph_precision)
            export_session_decoder(
                sam, model_dir(repository, decoder), opset=opset, precision=graph_precision
            )
    if family is SAM2:
        with steps.step("exporting the video tracking graphs (sam_video) to ONNX"):
            from sam_triton_export.family_sam2_video import build_sam2_video_model, export_video_graphs

            # The same weights built as sam2's video predictor (its tracking switches).
            tracker = build_sam2_video_model(spec, checkpoint, random_seed=random_seed)
            export_video_graphs(
                tracker, model_dir(repository, options.served(VIDEO)), opset=opset, precision=graph_precision
            )
    if verify:
        with steps.step(f"verifying ONNX against the PyTorch {'SAM2' if family is SAM2 else 'Sam'}Predictor"):
            from sam_triton_export.verify import verify_models

            verify_graphs = family_sam2.verify_models if family is SAM2 else verify_models
            report = verify_graphs(
                model_file(repository, encoder),
                model_file(repository, decoder),
                sam,
                precision=precision,
                log=log,
            )
            result.verify = report
            log(report.format())
        if not report.passed:
            raise VerifyFailed(report)
    if target == "tensorrt":
        with steps.step("building TensorRT plans"):
            from sam_triton_export.tensorrt import build_plan, plan_profiles

            for role, profile in plan_profiles(options).items():
                model = options.served(role)
                onnx_file, plan = model_file(repository, model), model_file(repository, model, target)
                build_plan(onnx_file, plan, profile, fp16=precision == "fp16")
    with steps.step(f"writing Triton configs for target {target}"):
        write_repository_files(repository, options)
        files = weight_files(repository, target, family.name, name)
        result.files = {str(p.relative_to(repository)): p.stat().st_size for p in files}
        result.info = {
            **wanted,
            "files": {str(p.relative_to(repository)): sha256_file(p) for p in files},
            "verify": result.verify.to_dict() if result.verify else None,
            "timings_s": result.timings,
            "exported_on": platform.node(),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_export_info(repository, result.info, name)
    return result

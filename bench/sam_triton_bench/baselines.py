"""In-process baselines: the same scenario without the server, in the same run.

* ``reference``   - ``segment_anything``'s ``SamPredictor`` / ``SamAutomaticMaskGenerator``
  (``mobile_sam``'s or ``efficientsam``'s for those models, ``sam2``'s ``SAM2ImagePredictor`` /
  ``SAM2AutomaticMaskGenerator`` for SAM 2 models)
  on the model built by ``sam_triton_export.model_builder.build_sam`` (the code path users
  and the exporter use), from a checkpoint or seeded random weights.
* ``onnxruntime`` - the repository's exported ONNX files in sessions created exactly like
  the served models create theirs (:func:`sam_triton_server.backend.ort.create_session`, so on a
  CPU-only machine the encoder runs on OpenVINO like the served one, unless
  ``SAM_TRITON_CPU_RUNTIME`` says otherwise), with the SDK's own client-side work around
  them (resize/pad, prompt encoding, mask upscaling). Served minus this is therefore the
  serving overhead alone: gRPC, Triton's scheduling and the Python backend.

Both run one request at a time (a process-local predictor has no concurrency to offer) with
the same images and clicks as the served scenario. torch, segment_anything and onnxruntime are
imported inside the functions: the SDK must import without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sam_triton import tensors
from sam_triton.prompts import encode_prompt, group_by_points
from sam_triton.results import ImageEmbedding, Prediction
from sam_triton_common import contract
from sam_triton_common.contract import IMAGE_EMBEDDINGS, IOU_PREDICTIONS, LOW_RES_MASKS

from .images import BenchImage, click_point
from .scenarios import ScenarioOptions, ScenarioUnavailable, click_prompt, encode_image, pick

BaselineKind = Literal["reference", "onnxruntime"]
BASELINES: tuple[BaselineKind, ...] = ("reference", "onnxruntime")

SyncRequest = Callable[[int], object]


def onnx_path(role: str, model: str | None = None) -> Path:
    """The ONNX file of ``role`` (encoder, decoder) of the repository's model ``model``."""
    return Path(contract.served_name(model, role)) / contract.MODEL_VERSION / contract.MODEL_FILE


@dataclass(frozen=True)
class BaselineSpec:
    """Where the in-process model comes from. ``repository`` may supply the rest (export.json)."""

    kind: BaselineKind
    model_type: str | None = None
    checkpoint: Path | None = None
    random_seed: int | None = None
    repository: Path | None = None
    model: str | None = None
    """Which model of the repository (``export --name``; None: the unnamed one)."""
    threads: int = 0
    """onnxruntime intra-op threads (0: its default, as the served models use unless configured)."""


@dataclass(frozen=True)
class PreparedBaseline:
    request: SyncRequest
    notes: dict[str, Any] = field(default_factory=dict)


def resolve_weights(spec: BaselineSpec) -> tuple[str, Path | None, int | None]:
    """(model_type, checkpoint, random_seed) for the reference, filling gaps from export.json.

    Explicit arguments win; otherwise the repository says which weights the server runs, so
    ``--baseline reference --repository R`` compares like with like without repeating them.
    """
    info = (
        contract.read_export_info(spec.repository, spec.model) if spec.repository is not None else None
    ) or {}
    raw_weights = info.get("weights")
    weights: dict[str, Any] = raw_weights if isinstance(raw_weights, dict) else {}
    model_type = spec.model_type or info.get("model_type")
    checkpoint, seed = spec.checkpoint, spec.random_seed
    if checkpoint is None and seed is None:
        ckpt = weights.get("checkpoint") or info.get("checkpoint")
        if ckpt:
            checkpoint = Path(ckpt)
        else:
            seed_value = weights.get("random_seed", info.get("seed"))
            seed = int(seed_value) if seed_value is not None else None
    if not model_type:
        raise ScenarioUnavailable(
            "--baseline reference needs --model-type (or --repository with an export.json)"
        )
    if checkpoint is None and seed is None:
        raise ScenarioUnavailable(
            "--baseline reference needs --checkpoint PATH or --random-weights [--seed N] "
            "(or --repository whose export.json names them)"
        )
    return str(model_type), checkpoint, seed


# --------------------------------------------------------------------------- reference


def _reference(
    spec: BaselineSpec, scenario: str, images: Sequence[BenchImage], opts: ScenarioOptions
) -> PreparedBaseline:
    from sam_triton_export.family_sam2 import build_sam2_model, is_sam2
    from sam_triton_export.model_builder import build_sam

    model_type, checkpoint, seed = resolve_weights(spec)
    random_seed = seed if checkpoint is None else None
    # Each model's own package is its reference: segment_anything for SAM 1, mobile_sam for
    # MobileSAM, efficientsam for EfficientViT-SAM, sam2 for SAM 2.
    if is_sam2(model_type):
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as SamAutomaticMaskGenerator
        from sam2.sam2_image_predictor import SAM2ImagePredictor as SamPredictor

        sam = build_sam2_model(model_type, checkpoint, random_seed=random_seed)
    else:
        from sam_triton_export.model_builder import reference_of

        sam = build_sam(model_type, checkpoint, random_seed=random_seed)
        reference = reference_of(sam)
        SamPredictor, SamAutomaticMaskGenerator = reference.predictor, reference.automatic_mask_generator
    notes = {
        "model_type": model_type,
        "weights": str(checkpoint) if checkpoint is not None else f"random seed {seed}",
    }

    def predict(predictor: Any, i: int) -> object:
        x, y = click_point(i, pick(images, i).size)
        return predictor.predict(
            point_coords=np.array([[x, y]]),
            point_labels=np.array([1]),
            multimask_output=opts.multimask_output,
        )

    if scenario == "encode":
        predictor = SamPredictor(sam)
        return PreparedBaseline(lambda i: predictor.set_image(encode_image(images, i, opts)), notes)
    if scenario == "click":
        # One predictor per image, each set once before the run (like the served click's setup).
        predictors = [SamPredictor(sam) for _ in images]
        for p, image in zip(predictors, images, strict=True):
            p.set_image(image.rgb)
        return PreparedBaseline(lambda i: predict(predictors[i % len(predictors)], i), notes)
    if scenario == "oneshot":
        predictor = SamPredictor(sam)

        def oneshot(i: int) -> object:
            predictor.set_image(pick(images, i).rgb)
            return predict(predictor, i)

        return PreparedBaseline(oneshot, notes)
    if scenario == "automask":
        generator = SamAutomaticMaskGenerator(
            sam, points_per_side=opts.points_per_side, points_per_batch=opts.points_per_batch
        )
        return PreparedBaseline(lambda i: generator.generate(pick(images, i).rgb), notes)
    raise ValueError(f"unknown scenario {scenario!r}")


# --------------------------------------------------------------------------- onnxruntime


@dataclass(frozen=True)
class OrtHandle:
    """An in-process embedding and what ``sam_session`` derives from it once (image features)."""

    embedding: ImageEmbedding
    features: tuple[npt.NDArray[np.float32], ...]


class OrtSam:
    """The exported graphs in-process, with the SDK's client-side work around them.

    The request/response helpers are the SDK's own (:mod:`sam_triton.tensors`), so the tensors
    fed to the graphs are byte for byte what a served request carries, and the graphs are the
    served ones: mask-free prompts go through the split decoder on features computed at embed
    time (as ``sam_session`` and ``sam_automask`` do), prompts with a mask through the full one.
    """

    def __init__(self, repository: Path, threads: int = 0, model: str | None = None) -> None:
        from sam_triton_export.verify import encoder_cpu_precision
        from sam_triton_server.backend.ort import CPU_RUNTIMES, create_session
        from sam_triton_server.backend.prompt_decoder import PromptDecoder

        def session(path: Path, graph: str, precision: str = "fp32") -> Any:
            return create_session(
                path, intra_op_threads=threads, cpu_runtime=CPU_RUNTIMES[graph], cpu_precision=precision
            )

        decoder = repository / onnx_path(contract.DECODER_MODEL, model)
        # The encoder in the precision it is served in (export --precision bf16 sets it at run time).
        exported = str((contract.read_export_info(repository, model) or {}).get("precision", "fp32"))
        encoder = repository / onnx_path(contract.ENCODER_MODEL, model)
        self.encoder = session(encoder, "encoder", encoder_cpu_precision(exported))
        self.decoder = session(decoder, "decoder")
        self.split = PromptDecoder(
            session(decoder.with_name(contract.IMAGE_FEATURES_FILE), "decoder"),
            session(decoder.with_name(contract.PROMPT_DECODER_FILE), "decoder"),
        )

    def embed(self, rgb: npt.NDArray[np.uint8]) -> OrtHandle:
        inputs, input_size = tensors.encoder_inputs(rgb)
        (emb,) = self.encoder.run([contract.IMAGE_EMBEDDINGS], inputs)
        embedding = ImageEmbedding(emb[0], (int(rgb.shape[0]), int(rgb.shape[1])), input_size)
        return OrtHandle(embedding, self.split.image_features(emb[0]))

    def _run_decoder(self, handle: OrtHandle, prompt_inputs: dict[str, Any]) -> dict[str, Any]:
        embedding = handle.embedding.embedding
        assert embedding is not None
        if "mask_input" in prompt_inputs:  # only present when a prompt carries a mask
            feed = {IMAGE_EMBEDDINGS: embedding[None], **prompt_inputs}
            low, iou = self.decoder.run([LOW_RES_MASKS, IOU_PREDICTIONS], feed)
        else:
            low, iou = self.split.run(
                handle.features,
                prompt_inputs["point_coords"],
                prompt_inputs["point_labels"],
                prompt_inputs["multimask_output"],
            )
        return {LOW_RES_MASKS: low, IOU_PREDICTIONS: iou}

    def predict(self, handle: OrtHandle, prompt: Any, multimask_output: bool) -> Prediction:
        embedding = handle.embedding
        (batch,) = group_by_points([encode_prompt(prompt, embedding.original_size)], 1)
        inputs = tensors.decoder_prompt_inputs(batch, multimask_output, mask_optional=True)
        outputs = self._run_decoder(handle, inputs)
        (pred,) = tensors.decode_predictions(
            outputs, "onnxruntime", 1, embedding.input_size, embedding.original_size, False
        )
        return pred

    def decode_points(
        self, handle: OrtHandle, coords: npt.NDArray[np.float64], labels: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """``amg.DecodeFn``: (B, 1, 2) points in the 1024 frame -> multimask logits and scores.

        Appends SAM's (0, 0)/-1 padding point (the ONNX decoder has no implicit one), like
        ``SamPredictor.predict_torch`` does inside the prompt encoder.
        """
        count = coords.shape[0]
        pad = np.zeros((count, 1, 2))
        inputs = {
            "point_coords": np.concatenate([coords, pad], axis=1).astype(np.float32)[None],
            "point_labels": np.concatenate(
                [labels.astype(np.float32), -np.ones((count, 1), np.float32)], axis=1
            )[None],
            "multimask_output": np.array([[True]]),
        }
        outputs = self._run_decoder(handle, inputs)
        return outputs[LOW_RES_MASKS][0], outputs[IOU_PREDICTIONS][0]


def _onnxruntime(
    spec: BaselineSpec, scenario: str, images: Sequence[BenchImage], opts: ScenarioOptions
) -> PreparedBaseline:
    if spec.repository is None:
        raise ScenarioUnavailable("--baseline onnxruntime needs --repository (the exported model repository)")
    model = OrtSam(spec.repository, spec.threads, spec.model)
    notes = {
        "repository": str(spec.repository),
        "providers": list(model.encoder.get_providers()),
        "decoder_providers": list(model.decoder.get_providers()),
        "intra_op_threads": spec.threads,
    }
    if scenario == "encode":
        return PreparedBaseline(lambda i: model.embed(encode_image(images, i, opts)), notes)
    if scenario == "click":
        handles = [model.embed(image.rgb) for image in images]
        return PreparedBaseline(
            lambda i: model.predict(
                handles[i % len(handles)], click_prompt(i, pick(images, i)), opts.multimask_output
            ),
            notes,
        )
    if scenario == "oneshot":

        def oneshot(i: int) -> object:
            image = pick(images, i)
            return model.predict(model.embed(image.rgb), click_prompt(i, image), opts.multimask_output)

        return PreparedBaseline(oneshot, notes)
    if scenario == "automask":
        from sam_triton_common.amg import AmgParams, generate

        params = AmgParams(points_per_side=opts.points_per_side, points_per_batch=opts.points_per_batch)
        return PreparedBaseline(
            lambda i: generate(pick(images, i).rgb, params, model.embed, model.decode_points), notes
        )
    raise ValueError(f"unknown scenario {scenario!r}")


_BUILDERS: dict[
    str, Callable[[BaselineSpec, str, Sequence[BenchImage], ScenarioOptions], PreparedBaseline]
] = {
    "reference": _reference,
    "onnxruntime": _onnxruntime,
}


def prepare_baseline(
    spec: BaselineSpec, scenario: str, images: Sequence[BenchImage], opts: ScenarioOptions
) -> PreparedBaseline:
    """Load the in-process model and do the scenario's untimed setup; returns the request."""
    try:
        builder = _BUILDERS[spec.kind]
    except KeyError:
        raise ValueError(f"unknown baseline {spec.kind!r}; choose one of {', '.join(BASELINES)}") from None
    try:
        return builder(spec, scenario, images, opts)
    except ImportError as exc:
        extra = "export" if spec.kind == "reference" else "server"
        raise ScenarioUnavailable(
            f"--baseline {spec.kind} needs packages that are not installed ({exc}); "
            f"install sam-triton[{extra}]"
        ) from exc

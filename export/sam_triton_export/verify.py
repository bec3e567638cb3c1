"""Exported ONNX models vs the PyTorch reference (the predictor of the model's own package:
segment_anything's ``SamPredictor``, mobile_sam's, or efficientsam's for EfficientViT-SAM).

The exported encoder and decoder run on the runtimes the server runs them on (onnxruntime;
the encoder on OpenVINO on CPU-only machines), end to end (the decoder gets the *exported*
encoder's embedding), on synthetic images of two aspect ratios and the prompt kinds docs/serving/export.md
section lists; ``sam_session``'s split decoder is held to the full decoder on the mask-free ones.
Agreement is judged with that section's tolerances for fp32; fp16 and bf16 (the encoder computing
in bfloat16 on the CPU) are measured against their own, looser, documented tolerances: their
report is the loss against fp32, whose graphs match the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import (
    IMAGE,
    IMAGE_EMBEDDINGS,
    IMAGE_FEATURES_FILE,
    IMAGE_SIZE,
    INPUT_SIZE,
    LOW_RES_SIZE,
    PROMPT_DECODER_FILE,
)
from sam_triton_server.backend.cpu_precision import BF16, FP32

if TYPE_CHECKING:
    from sam_triton_server.backend.ort import Session
    from sam_triton_server.backend.prompt_decoder import PromptDecoder
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Tolerances:
    score_max_abs: float
    logits_rel_range: float  # max |diff| of low-res logits / (max - min) of the reference's
    iou_min: float
    iou_mean: float
    split_decoder_max_abs: float  # the split decoder runs the same operations: only rounding
    # max |diff| of the embedding / its (max - min): bounded where the encoder computes in less
    # than fp32 (fp32 is held through the masks and logits it leads to)
    embedding_rel_range: float = math.inf


TOLERANCES: dict[str, Tolerances] = {
    "fp32": Tolerances(
        score_max_abs=1e-3, logits_rel_range=1e-3, iou_min=0.99, iou_mean=0.995, split_decoder_max_abs=1e-4
    ),
    # Half-precision compute is not held to the fp32 bounds; these flag a broken fp16 graph
    # (NaNs, overflow), while the report gives the measured loss.
    "fp16": Tolerances(
        score_max_abs=5e-2, logits_rel_range=5e-2, iou_min=0.8, iou_mean=0.95, split_decoder_max_abs=1e-2
    ),
    # The encoder in bfloat16 (8-bit mantissa) on the CPU, the decoder in fp32. About 3x what
    # vit_b measured (embedding 6.9e-3 of its range, scores 3e-4, logits 9.2e-3 of range, mask
    # IoU min 0.985, mean 0.995: BENCHMARKS.md, "bf16 encoder"), room for other weights; a graph
    # that is broken, or not the one exported, is far past them.
    BF16: Tolerances(
        score_max_abs=1e-2,
        logits_rel_range=3e-2,
        iou_min=0.95,
        iou_mean=0.98,
        split_decoder_max_abs=1e-4,
        embedding_rel_range=2e-2,
    ),
}


def encoder_cpu_precision(precision: str) -> str:
    """What the encoder computes in on the CPU for an export ``precision``: bf16 is the only
    one set at run time (the graph stays fp32); fp16 is in the graph itself."""
    return BF16 if precision == BF16 else FP32


@dataclass
class CaseResult:
    name: str
    score_max_abs: float
    logits_max_abs: float
    logits_range: float
    ious: list[float]

    @property
    def logits_rel(self) -> float:
        return self.logits_max_abs / max(self.logits_range, 1e-12)


@dataclass
class VerifyReport:
    precision: str
    tolerances: Tolerances
    embedding_max_abs: float = 0.0
    embedding_mean_abs: float | None = None  # the largest of the images' mean |diff| (None: not measured)
    embedding_range: float = 0.0
    runtimes: dict[str, str] = field(default_factory=dict)  # graph -> what ran it (served as well)
    # sam_session's split decoder (image_features + prompt_decoder) against the full decoder,
    # on every mask-free case: it must compute the same thing.
    split_decoder_max_abs: float = 0.0
    cases: list[CaseResult] = field(default_factory=list)
    reference: str = "segment_anything SamPredictor"  # what the graphs were compared with
    has_split_decoder: bool = True  # whether the family has the split pair to hold to the full decoder

    @property
    def score_max_abs(self) -> float:
        return max(c.score_max_abs for c in self.cases)

    @property
    def logits_rel(self) -> float:
        return max(c.logits_rel for c in self.cases)

    @property
    def logits_max_abs(self) -> float:
        return max(c.logits_max_abs for c in self.cases)

    @property
    def iou_min(self) -> float:
        return min(iou for c in self.cases for iou in c.ious)

    @property
    def iou_mean(self) -> float:
        ious = [iou for c in self.cases for iou in c.ious]
        return float(np.mean(ious))

    @property
    def embedding_rel(self) -> float:
        return self.embedding_max_abs / max(self.embedding_range, 1e-12)

    def failures(self) -> list[str]:
        t, out = self.tolerances, []
        if not all(np.isfinite([self.score_max_abs, self.logits_rel, self.embedding_max_abs])):
            out.append("non-finite outputs")
        if self.embedding_rel > t.embedding_rel_range:
            out.append(f"embeddings differ by {self.embedding_rel:.3g} of range > {t.embedding_rel_range:g}")
        if self.score_max_abs > t.score_max_abs:
            out.append(f"scores differ by {self.score_max_abs:.3g} > {t.score_max_abs:g}")
        if self.logits_rel > t.logits_rel_range:
            out.append(f"low-res logits differ by {self.logits_rel:.3g} of range > {t.logits_rel_range:g}")
        if self.iou_min < t.iou_min:
            out.append(f"min mask IoU {self.iou_min:.4f} < {t.iou_min}")
        if self.iou_mean < t.iou_mean:
            out.append(f"mean mask IoU {self.iou_mean:.4f} < {t.iou_mean}")
        if not self.split_decoder_max_abs <= t.split_decoder_max_abs:
            out.append(
                f"split decoder differs from the full decoder by {self.split_decoder_max_abs:.3g}"
                f" > {t.split_decoder_max_abs:g}"
            )
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def format(self) -> str:
        t = self.tolerances
        lines = [
            f"verify ({self.precision}) against {self.reference},"
            f" {len(self.cases)} prompt cases"
            + "".join(f", {graph} on {runtime}" for graph, runtime in self.runtimes.items()),
            f"  {'case':<36} {'score diff':>10} {'logit diff':>10} {'/range':>9} {'min IoU':>8}",
        ]
        for c in self.cases:
            lines.append(
                f"  {c.name:<36} {c.score_max_abs:>10.2e} {c.logits_max_abs:>10.2e}"
                f" {c.logits_rel:>9.2e} {min(c.ious):>8.5f}"
            )
        lines += [
            f"  embedding max abs diff {self.embedding_max_abs:.3e} = {self.embedding_rel:.3e} of range"
            f" {self.embedding_range:.3g}"
            + (f" (tolerance {t.embedding_rel_range:g})" if math.isfinite(t.embedding_rel_range) else "")
            + ("" if self.embedding_mean_abs is None else f", mean abs diff {self.embedding_mean_abs:.3e}"),
            f"  scores    max abs diff {self.score_max_abs:.3e} (tolerance {t.score_max_abs:g})",
            f"  logits    max abs diff {self.logits_max_abs:.3e} = {self.logits_rel:.3e} of range"
            f" (tolerance {t.logits_rel_range:g})",
            f"  mask IoU  min {self.iou_min:.5f} (>= {t.iou_min}),"
            f" mean {self.iou_mean:.5f} (>= {t.iou_mean})",
            *(
                [f"  split decoder vs full decoder max abs diff {self.split_decoder_max_abs:.3e}"]
                if self.has_split_decoder
                else []
            ),
            "  PASS" if self.passed else "  FAIL: " + "; ".join(self.failures()),
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "passed": self.passed,
            "runtimes": dict(self.runtimes),
            "tolerances": asdict(self.tolerances),
            "embedding_max_abs": self.embedding_max_abs,
            "embedding_mean_abs": self.embedding_mean_abs,
            "score_max_abs": self.score_max_abs,
            "logits_max_abs": self.logits_max_abs,
            "logits_rel_range": self.logits_rel,
            "iou_min": self.iou_min,
            "iou_mean": self.iou_mean,
            "split_decoder_max_abs": self.split_decoder_max_abs,
        }


def sample_images(seed: int = 0) -> list[Array]:
    """Deterministic RGB test images: landscape and portrait, gradients, shapes and noise."""
    rng = np.random.default_rng(seed)
    images = []
    for h, w in ((480, 640), (700, 500)):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
        for _ in range(4):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            radius = rng.integers(min(h, w) // 10, min(h, w) // 4)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.integers(0, 256, 3)
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.integers(0, 256, 3)
        img += rng.normal(0, 6, img.shape)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images


@dataclass(frozen=True)
class Prompt:
    """One SamPredictor.predict call, in original-image pixel coordinates."""

    name: str
    points: Array | None = None
    labels: Array | None = None
    box: Array | None = None
    refine: bool = False  # feed the reference's best low-res logits of the first case back in
    multimask: bool = True


def prompts_for(h: int, w: int) -> list[Prompt]:
    fg = np.array([[w * 0.5, h * 0.5]])
    two = np.array([[w * 0.3, h * 0.4], [w * 0.7, h * 0.6]])
    box = np.array([w * 0.2, h * 0.25, w * 0.75, h * 0.8])
    return [
        Prompt("point, multimask", fg, np.array([1])),
        Prompt("point, single mask", fg, np.array([1]), multimask=False),
        Prompt("fg + bg points", two, np.array([1, 0]), multimask=False),
        Prompt("box", box=box, multimask=False),
        Prompt("box + point, multimask", fg, np.array([1]), box=box),
        Prompt("point + mask_input refinement", two, np.array([1, 1]), refine=True, multimask=False),
    ]


def decoder_prompt_arrays(predictor: SamPredictor, prompt: Prompt) -> tuple[Array, Array]:
    """SAM's ONNX prompt convention: box corners labelled 2/3; a (0,0) padding point labelled
    -1 when there is no box (exactly what SamPredictor's prompt encoder does internally)."""
    size = predictor.original_size
    coords: list[Array] = []
    labels: list[Array] = []
    if prompt.points is not None and prompt.labels is not None:
        coords.append(predictor.transform.apply_coords(prompt.points.astype(np.float64), size))
        labels.append(prompt.labels.astype(np.float32))
    if prompt.box is not None:
        coords.append(
            predictor.transform.apply_boxes(prompt.box[None].astype(np.float64), size).reshape(2, 2)
        )
        labels.append(np.array([2, 3], dtype=np.float32))
    else:
        coords.append(np.zeros((1, 2)))
        labels.append(np.array([-1], dtype=np.float32))
    return np.concatenate(coords).astype(np.float32), np.concatenate(labels)


def encoder_input(predictor: SamPredictor, image: Array) -> tuple[Array, Array]:
    # EfficientViT-SAM's predictor resizes inside its model's transform (the same PIL resize).
    resize = getattr(predictor.transform, "apply_image", None) or predictor.model.transform.transforms[0]
    resized = resize(image)
    padded = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    padded[: resized.shape[0], : resized.shape[1]] = resized
    return padded, np.array(resized.shape[:2], dtype=np.int32)


def run_decoder(
    session: Session,
    embeddings: Array | dict[str, Array],
    coords: Array,
    labels: Array,
    mask_input: Array | None,
    multimask: bool,
) -> tuple[Array, Array]:
    """One decoder call: embeddings [B,256,64,64] (or every image feature the family's decoder
    takes, by name), coords [B,P,N,2], labels [B,P,N]."""
    batch, prompts = labels.shape[:2]
    if mask_input is None:
        mask = np.zeros((batch, prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
        has_mask = np.zeros((batch, prompts), np.float32)
    else:
        mask, has_mask = mask_input, np.ones((batch, prompts), np.float32)
    masks, scores = session.run(
        None,
        {
            **(
                embeddings
                if isinstance(embeddings, dict)
                else {IMAGE_EMBEDDINGS: embeddings.astype(np.float32)}
            ),
            "point_coords": coords.astype(np.float32),
            "point_labels": labels.astype(np.float32),
            "mask_input": mask,
            "has_mask_input": has_mask,
            "multimask_output": np.full((batch, 1), multimask),
        },
    )
    return masks, scores


def mask_iou(a: Array, b: Array) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@dataclass
class _Reference:
    masks: Array  # [K,H,W] bool
    scores: Array  # [K]
    logits: Array  # [K,256,256]


def _compare(
    name: str, sam: Sam, predictor: SamPredictor, ref: _Reference, logits: Array, scores: Array
) -> CaseResult:
    import torch

    with torch.no_grad():
        full = (
            sam.postprocess_masks(
                torch.from_numpy(logits[None]), predictor.input_size, predictor.original_size
            )[0].numpy()
            > sam.mask_threshold
        )
    return CaseResult(
        name=name,
        score_max_abs=float(np.abs(scores - ref.scores).max()),
        logits_max_abs=float(np.abs(logits - ref.logits).max()),
        logits_range=float(ref.logits.max() - ref.logits.min()),
        ious=[mask_iou(full[k], ref.masks[k]) for k in range(ref.masks.shape[0])],
    )


def _image_cases(
    sam: Sam,
    predictor: SamPredictor,
    decoder: Session,
    split: PromptDecoder,
    embedding: Array,
    split_diffs: list[float],
) -> Iterator[CaseResult]:
    """The prompt cases on one image; appends the split decoder's differences to ``split_diffs``."""
    h, w = predictor.original_size
    features = split.image_features(embedding[0])
    first: _Reference | None = None
    for prompt in prompts_for(h, w):
        mask_input = None
        if prompt.refine and first is not None:
            mask_input = first.logits[int(np.argmax(first.scores))][None].astype(np.float32)
        masks, scores, logits = predictor.predict(
            point_coords=prompt.points,
            point_labels=prompt.labels,
            box=prompt.box,
            mask_input=mask_input,
            multimask_output=prompt.multimask,
        )
        ref = _Reference(masks, scores, logits)
        first = first or ref
        coords, labels = decoder_prompt_arrays(predictor, prompt)
        out_logits, out_scores = run_decoder(
            decoder,
            embedding,
            coords[None, None],
            labels[None, None],
            None if mask_input is None else mask_input[None, None],
            prompt.multimask,
        )
        if mask_input is None:
            split_logits, split_scores = split.run(
                features,
                coords[None, None],
                labels[None, None],
                np.full((1, 1), prompt.multimask),
            )
            split_diffs += [
                float(np.abs(split_logits - out_logits).max()),
                float(np.abs(split_scores - out_scores).max()),
            ]
        yield _compare(f"{h}x{w} {prompt.name}", sam, predictor, ref, out_logits[0, 0], out_scores[0, 0])

    # Several objects in one call: P=3 single-point prompts against one embedding.
    points = np.array([[w * 0.25, h * 0.25], [w * 0.5, h * 0.5], [w * 0.8, h * 0.7]])
    arrays = [decoder_prompt_arrays(predictor, Prompt("", p[None], np.array([1]))) for p in points]
    out_logits, out_scores = run_decoder(
        decoder,
        embedding,
        np.stack([c for c, _ in arrays])[None],
        np.stack([lb for _, lb in arrays])[None],
        None,
        True,
    )
    for i, point in enumerate(points):
        masks, scores, logits = predictor.predict(point_coords=point[None], point_labels=np.array([1]))
        yield _compare(
            f"{h}x{w} prompt {i + 1}/3 of one call",
            sam,
            predictor,
            _Reference(masks, scores, logits),
            out_logits[0, i],
            out_scores[0, i],
        )


def verify_models(
    encoder_path: Path,
    decoder_path: Path,
    sam: Sam,
    *,
    precision: str = "fp32",
    images: list[Array] | None = None,
    log: Callable[[str], None] = print,
) -> VerifyReport:
    """Compare the two ONNX files with ``SamPredictor(sam)``; returns the report (never raises
    on disagreement: callers decide, see ``VerifyReport.passed``)."""
    from sam_triton_server.backend.ort import CPU_RUNTIMES, create_session
    from sam_triton_server.backend.prompt_decoder import PromptDecoder

    from sam_triton_export.model_builder import reference_of

    reference = reference_of(sam)
    report = VerifyReport(precision=precision, tolerances=TOLERANCES[precision], reference=reference.name)
    # Each graph on the runtime the served model picks for it on this machine.
    encoder = create_session(
        encoder_path, cpu_runtime=CPU_RUNTIMES["encoder"], cpu_precision=encoder_cpu_precision(precision)
    )
    decoder = create_session(decoder_path, cpu_runtime=CPU_RUNTIMES["decoder"])
    report.runtimes = {"encoder": encoder.get_providers()[0], "decoder": decoder.get_providers()[0]}
    split = PromptDecoder(
        create_session(decoder_path.with_name(IMAGE_FEATURES_FILE), cpu_runtime=CPU_RUNTIMES["decoder"]),
        create_session(decoder_path.with_name(PROMPT_DECODER_FILE), cpu_runtime=CPU_RUNTIMES["decoder"]),
    )
    split_diffs: list[float] = []
    predictor = reference.predictor(sam)
    for index, image in enumerate(images if images is not None else sample_images()):
        predictor.set_image(image)
        reference_embedding = predictor.features.detach().cpu().numpy()
        padded, input_size = encoder_input(predictor, image)
        (embedding,) = encoder.run(None, {IMAGE: padded[None], INPUT_SIZE: input_size[None]})
        difference = np.abs(embedding - reference_embedding)
        report.embedding_max_abs = max(report.embedding_max_abs, float(difference.max()))
        report.embedding_mean_abs = max(report.embedding_mean_abs or 0.0, float(difference.mean()))
        report.embedding_range = max(
            report.embedding_range, float(reference_embedding.max() - reference_embedding.min())
        )
        report.cases.extend(_image_cases(sam, predictor, decoder, split, embedding, split_diffs))
        report.split_decoder_max_abs = max(split_diffs, default=0.0)
        log(f"  image {index + 1}: {image.shape[0]}x{image.shape[1]} checked")
    return report

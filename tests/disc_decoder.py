"""A SAM decoder with realistic masks for automatic-mask tests, on both sides of a comparison.

A randomly initialised decoder yields a few near-identical image-wide blobs: every IoU and
stability filter and NMS would leave one mask, and any parity check would pass. So each prompt
adds a disc of pseudo-random radius and edge sharpness around its first point to the model's
own (amplified) logits, three nested sizes for the three multimask outputs, and the IoU head is
spread out. That gives candidates of all sizes and stabilities, overlapping ones for NMS, masks
cut by crop borders, and irregular edges from the real model.

The same sums run eagerly in the reference (:class:`DiscDecoder` wraps a ``Sam``'s prompt
encoder and mask decoder for ``SamAutomaticMaskGenerator``) and traced into an exported
``prompt_decoder`` graph (:func:`disc_prompt_decoder`), so a served model can be held to the
reference with the default filters on. The per-prompt pseudo-random value is a smooth function
of the point, not a sine hash: ONNX Runtime and torch must agree on it to float precision.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

RADIUS_STEPS = (1.0, 1.8, 3.0)  # the three multimask outputs, small to large
SCORE_STEPS = (0.5, 1.0, 0.7)
CELL = 40.0


def _fraction(x: torch.Tensor) -> torch.Tensor:
    return x - torch.floor(x)  # torch.frac has no ONNX export


def disc_terms(
    points: torch.Tensor, low: torch.Tensor, iou: torch.Tensor, model_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``points``: [P, 2] first points in the 1024 input frame; ``low`` [P, 3, 256, 256] and
    ``iou`` [P, 3]: the model's multimask outputs. Returns the disc logits and spread scores."""
    grid = torch.arange(low.shape[-1], dtype=torch.float32)
    # Centres snapped to cells of CELL low-res pixels (1024 frame -> 256 frame, then the cell):
    # neighbouring prompts share a disc, as neighbouring clicks on one object share its mask,
    # and box NMS has duplicates to remove.
    u = (torch.floor(points[:, 0] / 4 / CELL) + 0.5) * CELL
    v = (torch.floor(points[:, 1] / 4 / CELL) + 0.5) * CELL
    dist = torch.sqrt(
        (grid[None, None, :] - u[:, None, None]) ** 2 + (grid[None, :, None] - v[:, None, None]) ** 2
    )
    h = _fraction(u * 0.6180339887 + v * 0.4142135624)  # per-prompt, in [0, 1)
    radius = (6 + 30 * h)[:, None] * torch.tensor(RADIUS_STEPS)[None]
    sharpness = 20 + 200 * _fraction(h * 7.31)  # stabilities on both sides of 0.95
    discs = sharpness[:, None, None, None] * (1 - dist[:, None] / radius[:, :, None, None])
    logits = discs + model_weight * low
    scores = iou * 20 + _fraction(h * 3.7)[:, None] * torch.tensor(SCORE_STEPS)
    return logits, scores


class DiscDecoder:
    """Wraps a ``Sam`` in place so every mask decoder call returns :func:`disc_terms` of its
    prompts (the reference side; multimask calls only, as automatic masks make)."""

    def __init__(self, sam: Any, model_weight: float) -> None:
        self.model_weight = model_weight
        self._points: Any = None
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._pe_forward = sam.prompt_encoder.forward
        self._md_forward = sam.mask_decoder.forward
        sam.prompt_encoder.forward = self._prompt_forward
        sam.mask_decoder.forward = self._decoder_forward

    def _prompt_forward(self, points: Any, boxes: Any, masks: Any) -> Any:
        self._points = points[0].detach().clone()
        return self._pe_forward(points, boxes, masks)

    def _decoder_forward(self, **kw: Any) -> tuple[Any, Any]:
        # A generator compared with this one sends identical prompts: compute each batch once.
        key = hashlib.sha1(
            kw["image_embeddings"].numpy().tobytes() + kw["sparse_prompt_embeddings"].numpy().tobytes()
        ).hexdigest()
        if key not in self._cache:
            low, iou = self._md_forward(**kw)
            self._cache[key] = disc_terms(self._points[:, 0, :].float(), low, iou, self.model_weight)
        return self._cache[key]


def disc_prompt_decoder(prompt_decoder: torch.nn.Module, model_weight: float) -> torch.nn.Module:
    """The exporter's ``prompt_decoder`` module with :func:`disc_terms` after it (the served
    side; its inputs and outputs are the graph's, so it exports and serves unchanged)."""

    class DiscPromptDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = prompt_decoder

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            point_coords = inputs[-3]  # [1, P, N, 2], then point_labels and multimask_output
            low, iou = self.inner(*inputs)
            logits, scores = disc_terms(point_coords[0, :, 0, :], low[0], iou[0], model_weight)
            return logits[None], scores[None]

    return DiscPromptDecoder().eval()

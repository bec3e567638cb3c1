"""``sam_decoder`` for the python-onnxruntime target.

Triton hands over a batch of requests with different prompt counts (P), point counts (N) and
multimask switches (allow_ragged_batch). Requests are grouped by (P, N, multimask) and each
group is one onnxruntime call, so single-prompt clicks from different images batch together
while a 64-prompt automatic-mask request still goes through in one call.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sam_triton_common.contract import (
    DECODER_OUTPUTS,
    EMBEDDING_SHAPE,
    IMAGE_EMBEDDINGS,
    IMAGE_SIZE,
    LOW_RES_SIZE,
    POINT_LABELS,
    SAM1,
    Family,
    family_named,
)

from sam_triton_server.backend.models._common import (
    Array,
    InvalidInput,
    OnnxModelBase,
    check_dtype,
    check_finite,
    check_shape,
    int_parameter,
    split_batches,
)
from sam_triton_server.backend.ort import Session

GroupKey = tuple[int, int, bool]


def validate_decoder_inputs(
    arrays: dict[str, Array],
    *,
    max_prompts: int,
    max_points: int,
    embedding_is_trusted: bool = False,
    family: Family = SAM1,
) -> GroupKey:
    """Check one request's inputs; returns its (prompts, points, multimask) group key.

    ``embedding_is_trusted``: the embedding came from this server's encoder (sam_session's
    cache), so its 1M values are not scanned for NaN/inf on every click (~0.4 ms).
    ``family``: whose image features come with the prompts (SAM 2 adds high-res maps).
    """
    emb, coords, labels = arrays[IMAGE_EMBEDDINGS], arrays["point_coords"], arrays["point_labels"]
    mask, has_mask, multimask = arrays["mask_input"], arrays["has_mask_input"], arrays["multimask_output"]
    for name in family.decoder_inputs[:-1]:
        check_dtype(name, arrays[name], np.float32)
    check_dtype("multimask_output", multimask, np.bool_)
    batch = emb.shape[0]
    check_shape(IMAGE_EMBEDDINGS, emb, (batch, *EMBEDDING_SHAPE))
    for name, shape in family.features.items():
        check_shape(name, arrays[name], (batch, *shape))
    check_shape("point_coords", coords, (batch, None, None, 2))
    prompts, points = coords.shape[1:3]
    # points may be 0: a prompt of mask_input alone (or nothing at all), as SamPredictor allows.
    if prompts < 1:
        raise InvalidInput(f"point_coords needs at least one prompt, got shape {list(coords.shape)}")
    if prompts > max_prompts:
        raise InvalidInput(f"{prompts} prompts in one request; this server allows at most {max_prompts}")
    if points > max_points:
        raise InvalidInput(f"{points} points per prompt; this server allows at most {max_points}")
    check_shape("point_labels", labels, (batch, prompts, points))
    check_shape("mask_input", mask, (batch, prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE))
    check_shape("has_mask_input", has_mask, (batch, prompts))
    check_shape("multimask_output", multimask, (batch, 1))
    features = len(family.features)
    for name in family.decoder_inputs[features if embedding_is_trusted else 0 : -1]:
        check_finite(name, arrays[name])
    if (coords < 0).any() or (coords > IMAGE_SIZE).any():
        raise InvalidInput(
            f"point_coords must lie in the {IMAGE_SIZE}x{IMAGE_SIZE} input frame (0..{IMAGE_SIZE})"
        )
    if not np.isin(labels, POINT_LABELS).all():
        bad = sorted(set(labels[~np.isin(labels, POINT_LABELS)].tolist()))[:5]
        raise InvalidInput(f"point_labels {bad} are not valid labels (-1 pad, 0 bg, 1 fg, 2/3 box corners)")
    if not np.isin(has_mask, (0.0, 1.0)).all():
        raise InvalidInput("has_mask_input must be 0 or 1")
    if multimask.min() != multimask.max():
        raise InvalidInput("multimask_output must be the same for every row of one request")
    return prompts, points, bool(multimask[0, 0])


class TritonPythonModel(OnnxModelBase):
    GRAPHS = {"decoder": "onnx_file"}
    decoder: Session

    def setup(self) -> None:
        self.max_prompts = int_parameter(self.params, "max_prompts", 64)
        self.max_points = int_parameter(self.params, "max_points", 64)
        self.family = family_named(self.params.get("family", SAM1.name))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[GroupKey, list[tuple[int, dict[str, Array]]]] = defaultdict(list)
        for i, request in enumerate(requests):
            try:
                arrays = {name: self.input(request, name) for name in self.family.decoder_inputs}
                key = validate_decoder_inputs(
                    arrays, max_prompts=self.max_prompts, max_points=self.max_points, family=self.family
                )
                groups[key].append((i, arrays))
            except InvalidInput as e:
                responses[i] = self.error_for(e)
        for members in groups.values():
            try:
                names = self.family.decoder_inputs
                feed = {name: np.concatenate([a[name] for _, a in members]) for name in names}
                masks, scores = self.decoder.run(list(DECODER_OUTPUTS), feed)
                pieces = split_batches([a[IMAGE_EMBEDDINGS].shape[0] for _, a in members], masks, scores)
                for (i, _), (m, s) in zip(members, pieces, strict=True):
                    responses[i] = self.respond(dict(zip(DECODER_OUTPUTS, (m, s), strict=True)))
            except Exception as e:  # never take the server down over one group
                for i, _ in members:
                    responses[i] = self.error_for(e)
        return responses

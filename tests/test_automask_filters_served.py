"""Served automatic masks with the reference's default filters on, against SamAutomaticMaskGenerator.

Random weights give image-wide blobs that every filter would reduce to one mask, so
test_automask_e2e.py compares with the filters off. Here the served model has realistic masks:
the tiny-test weights' decoder with prompt-dependent discs after it (tests/disc_decoder.py),
exported as ``sam_decoder``'s prompt graph, which ``sam_automask`` runs, and served by a real
tritonserver; the reference wraps the same weights with the same sums. Then the default
``pred_iou_thresh`` (0.88), ``stability_score_thresh`` (0.95) and ``box_nms_thresh`` (0.7) each
remove candidates, on both sides, and what is left must be the same masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import segment_anything
import torch
from sam_triton import RemoteAutomaticMaskGenerator

from tests.conftest import ServedTriton, start_triton
from tests.disc_decoder import DiscDecoder, disc_prompt_decoder
from tests.test_automask_e2e import _assert_parity, _image

MODEL_WEIGHT = 10.0  # the model's own logits (std ~0.09 on these weights) roughen the disc edges
POINTS = {"points_per_side": 8}  # everything else at the reference's defaults


@pytest.fixture(scope="module")
def disc_server(
    tiny_repository: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedTriton]:
    import shutil

    from sam_triton_export import onnx_decoder
    from sam_triton_export.model_builder import build_sam

    repository = tmp_path_factory.mktemp("discs") / "model_repository"
    shutil.copytree(tiny_repository, repository)
    plain = onnx_decoder.prompt_decoder_module
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            onnx_decoder, "prompt_decoder_module", lambda sam: disc_prompt_decoder(plain(sam), MODEL_WEIGHT)
        )
        onnx_decoder.export_session_decoder(
            build_sam("tiny-test", tiny_checkpoint), repository / "sam_decoder" / "1"
        )
    served = start_triton(repository)
    try:
        yield served
    finally:
        served.process.stop()


def test_default_filters_keep_the_references_masks(disc_server: ServedTriton, tiny_checkpoint: Path) -> None:
    """Seen failing with the server's stability offset halved (24% extra masks) and with its
    box NMS skipped (the count check: 62 masks for 34)."""
    from sam_triton_export.model_builder import build_sam

    image = _image(120, 160)
    sam = build_sam("tiny-test", tiny_checkpoint)
    DiscDecoder(sam, MODEL_WEIGHT)
    with torch.no_grad():
        ref: list[dict[str, Any]] = segment_anything.SamAutomaticMaskGenerator(sam, **POINTS).generate(image)
    with RemoteAutomaticMaskGenerator(disc_server.grpc_url, **POINTS) as served:
        ours = served.generate(image)
    unfiltered = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    with RemoteAutomaticMaskGenerator(disc_server.grpc_url, **POINTS, **unfiltered) as served:
        candidates = served.generate(image)
    # The filters did the choosing: most candidates are gone, and many masks of all sizes stay.
    assert 30 <= len(ref) <= len(candidates) // 2, (len(ref), len(candidates))
    areas = sorted(r["area"] for r in ref)
    assert areas[-1] > 10 * areas[0]
    assert all(isinstance(o["segmentation"], np.ndarray) for o in ours)
    # As many masks: the parity below matches masks by IoU, and would not see the near
    # duplicates a missing NMS leaves (one may differ: a stability at the threshold).
    assert abs(len(ours) - len(ref)) <= 1, (len(ours), len(ref))
    _assert_parity(ref, ours, image.shape[:2])  # type: ignore[arg-type]

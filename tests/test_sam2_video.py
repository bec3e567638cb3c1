"""SAM 2 video tracking: the exported graphs against sam2's modules, and the tracker against
``SAM2VideoPredictor``.

One model for the module: the ``sam2.1-tiny-test`` configuration at a 256-pixel input (16x16
features). At sam2's 1024 the tiny Hiera's memory attention still attends 4096 queries to
4096 keys per remembered frame (seconds per frame on this CPU); 256 keeps every graph and
every step of the tracker and costs milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from sam_triton_export.family_sam2 import save_random_checkpoint
from sam_triton_export.family_sam2_video import (
    build_sam2_video_model,
    export_video_graphs,
    rotary_real,
    rotary_tables,
    verify_video_graphs,
)

MODEL_TYPE = "sam2.1-tiny-test"
SMALL_INPUT = ("++model.image_size=256",)
# Seeded weights whose first masks cover 30-60% of the frames (seed 4), with the object-score
# head's bias raised by 1 so the objects are visible (random weights score them about 0).
SEED = 4
SCORE_HEAD_BIAS = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = save_random_checkpoint(MODEL_TYPE, tmp_path_factory.mktemp("video") / "sam2_video.pt", SEED)
    saved = torch.load(path, weights_only=True)
    saved["model"][SCORE_HEAD_BIAS] += 1.0
    torch.save(saved, path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Any:
    return build_sam2_video_model(MODEL_TYPE, checkpoint, extra_overrides=SMALL_INPUT)


@pytest.fixture(scope="module")
def graphs_dir(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("video_graphs")
    export_video_graphs(model, directory)
    return directory


def test_rotary_real_equals_sam2_complex_rotation() -> None:
    """The real-valued rotation is sam2's complex one: queries (one table) and keys of three
    memories (the table repeated), several heads."""
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    dim, side = 32, 8
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, side * side, dim, generator=gen)
    k = torch.randn(1, 2, 3 * side * side, dim, generator=gen)
    ref_q, ref_k = apply_rotary_enc(q, k, compute_axial_cis(dim, side, side), repeat_freqs_k=True)
    cos, sin = rotary_tables(dim, side, side)
    torch.testing.assert_close(rotary_real(q, cos, sin), ref_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(rotary_real(k, cos, sin), ref_k, rtol=0, atol=1e-6)
    # not the identity: the rotation moves every pair
    assert (rotary_real(q, cos, sin) - q).abs().max() > 0.1


def test_video_graphs_match_sam2_modules(model: Any, graphs_dir: Path) -> None:
    """The three graphs on ONNX Runtime against ``_forward_sam_heads``,
    ``_prepare_memory_conditioned_features`` and ``_encode_new_memory`` (what ``sam-triton
    verify`` runs on a video model)."""
    report = verify_video_graphs(graphs_dir, model)
    assert report.selections_agree
    assert set(report.max_abs) == {
        "video_decoder object_score_logits",
        "video_decoder mask_logits",
        "video_decoder iou_predictions",
        "video_decoder object_pointer",
        "memory_attention features",
        "memory_encoder features",
    }
    assert report.passed(), report.lines()
    assert report.max_abs["memory_attention features"] < 1e-4, report.lines()

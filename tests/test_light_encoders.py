"""MobileSAM (the ``mobile_sam`` package's TinyViT encoder with SAM 1's decoder) served like SAM 1:
the small test configuration is exported from a seeded checkpoint in ``mobile_sam.pt``'s format
(a bare state dict) through ``--checkpoint``'s code path, served by a real tritonserver and
compared over gRPC, on images made here, with the package's own ``SamPredictor`` and
``SamAutomaticMaskGenerator`` (one server for this module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sam_triton_common import contract

from tests.conftest import ServedTriton, start_triton
from tests.test_automask_e2e import _assert_parity

MODEL_TYPE = "mobile_sam-tiny-test"
SEED = 11


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """Discs of flat colour on a gradient: edges for the masks to follow."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1).astype(np.uint8)
    for _ in range(8):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 10, h // 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img


PHOTO = _photo(389, 517, seed=5)


@pytest.fixture(scope="module")
def mobile_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sam_triton_export.model_builder import save_random_checkpoint

    return save_random_checkpoint(MODEL_TYPE, tmp_path_factory.mktemp("mobile") / "mobile_sam.pt", SEED)


@pytest.fixture(scope="module")
def mobile_sam_model(mobile_checkpoint: Path) -> Any:
    from sam_triton_export.model_builder import build_sam

    return build_sam(MODEL_TYPE, mobile_checkpoint)


@pytest.fixture(scope="module")
def mobile_server(
    tmp_path_factory: pytest.TempPathFactory, mobile_checkpoint: Path
) -> Iterator[ServedTriton]:
    from sam_triton_export.pipeline import export_repository

    repository = tmp_path_factory.mktemp("mobilerepo") / "model_repository"
    # The graphs are held to the reference over gRPC below (verify runs the same comparison).
    export_repository(MODEL_TYPE, repository, checkpoint=mobile_checkpoint, verify=False, log=lambda _: None)
    served = start_triton(repository)
    try:
        yield served
    finally:
        served.process.stop()


def test_reference_is_the_mobile_sam_package(mobile_sam_model: Any) -> None:
    import mobile_sam
    from sam_triton_export.model_builder import reference_package

    assert isinstance(mobile_sam_model, mobile_sam.modeling.Sam)
    assert type(mobile_sam_model.image_encoder).__name__ == "TinyViT"
    assert reference_package(mobile_sam_model) is mobile_sam
    # Seeded noise in TinyViT's (zero-initialised) attention biases, and the bias table the
    # encoder runs with follows the loaded weights (eval() after loading rebuilds it).
    attention = mobile_sam_model.image_encoder.layers[1].blocks[0].attn
    assert attention.attention_biases.abs().sum() > 0
    assert attention.ab.equal(attention.attention_biases[:, attention.attention_bias_idxs])


@pytest.fixture(scope="module")
def reference(mobile_sam_model: Any) -> Any:
    """The package's own predictor, its image set once for both served paths."""
    from mobile_sam import SamPredictor

    predictor = SamPredictor(mobile_sam_model)
    predictor.set_image(PHOTO)
    return predictor


@pytest.mark.parametrize("server_embeddings", [False, True], ids=["stateless", "session"])
def test_served_masks_match_mobile_sams_predictor(
    mobile_server: ServedTriton, reference: Any, server_embeddings: bool
) -> None:
    from sam_triton import RemoteSamPredictor

    image = PHOTO
    prompts: list[dict[str, Any]] = [
        {"point_coords": np.array([[260.0, 190.0]]), "point_labels": np.array([1])},
        {"point_coords": np.array([[100.0, 80.0], [400.0, 300.0]]), "point_labels": np.array([1, 0])},
        {"box": np.array([60.0, 40.0, 450.0, 330.0]), "multimask_output": False},
    ]
    with RemoteSamPredictor(
        mobile_server.grpc_url, timeout=120, server_embeddings=server_embeddings
    ) as remote:
        remote.set_image(image)
        embedding = remote.get_image_embedding()
        assert np.abs(embedding - reference.get_image_embedding().numpy()).max() < 1e-3
        for prompt in prompts:
            masks, scores, _ = remote.predict(**prompt)
            ref_masks, ref_scores, _ = reference.predict(**prompt)
            assert masks.shape == ref_masks.shape == (len(ref_scores), *image.shape[:2])
            assert np.abs(scores - ref_scores).max() <= 1e-3
            for ours, theirs in zip(masks, ref_masks, strict=True):
                union = (ours | theirs).sum()
                assert union == 0 or (ours & theirs).sum() / union >= 0.99


def test_automatic_masks_match_mobile_sams_generator(
    mobile_server: ServedTriton, mobile_sam_model: Any
) -> None:
    import torch
    from mobile_sam import SamAutomaticMaskGenerator
    from sam_triton import RemoteAutomaticMaskGenerator

    image = _photo(120, 160, seed=9)
    # Loose thresholds keep every candidate (the comparison is then about the masks themselves).
    params = {
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0,
    }
    with torch.no_grad():
        reference = SamAutomaticMaskGenerator(mobile_sam_model, **params).generate(image)
    with RemoteAutomaticMaskGenerator(mobile_server.grpc_url, timeout=120, **params) as generator:
        ours = generator.generate(image)
    assert len(reference) >= 24, "parity would not be discriminating"
    _assert_parity(reference, ours, image.shape[:2])


@pytest.mark.parametrize(
    ("model_type", "which", "found"),
    [("tiny-test", "mobile", MODEL_TYPE), (MODEL_TYPE, "vit", "tiny-test")],
    ids=["mobile_sam-file-as-vit", "vit-file-as-mobile_sam"],
)
def test_checkpoint_of_the_other_encoder_is_a_clear_error_and_writes_nothing(
    model_type: str,
    which: str,
    found: str,
    mobile_checkpoint: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sam_triton.cli import main

    checkpoint = mobile_checkpoint if which == "mobile" else tiny_checkpoint
    repository = tmp_path / "model_repository"
    code = main(
        [
            "export",
            "--model-type",
            model_type,
            "--checkpoint",
            str(checkpoint),
            "--repository",
            str(repository),
        ]
    )
    error = capsys.readouterr().err
    assert code == 2
    assert f"is a {found} checkpoint, but model type {model_type} was requested" in error
    assert f"use --model-type {found}" in error
    assert not repository.exists() or not any(repository.iterdir())
    assert contract.read_export_info(repository) is None

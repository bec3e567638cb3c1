"""The light encoders with SAM 1's decoder, served like SAM 1: MobileSAM (the ``mobile_sam``
package's TinyViT) and EfficientViT-SAM's XL structure (the ``efficientsam`` package). Each
small test configuration is exported from a seeded checkpoint in its official format (a bare
state dict) through ``--checkpoint``'s code path, both into one repository served by one real
tritonserver, and compared over gRPC, on images made here, with its own package's predictor and
automatic mask generator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sam_triton_common import contract

from tests.conftest import ServedTriton, start_triton
from tests.test_automask_e2e import _assert_parity

# served name -> (model type, seed)
LIGHT = {
    "mobile": ("mobile_sam-tiny-test", 11),
    "evit": ("efficientvit_sam-tiny-test", 12),
}
REFERENCE = {"mobile": "mobile_sam SamPredictor", "evit": "efficientsam EfficientViTSamPredictor"}


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
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sam_triton_export.model_builder import save_random_checkpoint

    folder = tmp_path_factory.mktemp("light")
    return {
        name: save_random_checkpoint(model_type, folder / f"{name}.pt", seed)
        for name, (model_type, seed) in LIGHT.items()
    }


@pytest.fixture(scope="module")
def models(checkpoints: dict[str, Path]) -> dict[str, Any]:
    from sam_triton_export.model_builder import build_sam

    return {name: build_sam(LIGHT[name][0], path) for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def light_server(
    tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]
) -> Iterator[ServedTriton]:
    from sam_triton_export.pipeline import export_repository

    repository = tmp_path_factory.mktemp("lightrepo") / "model_repository"
    for name, path in checkpoints.items():
        # The graphs are held to the reference over gRPC below (verify runs the same comparison).
        export_repository(
            LIGHT[name][0], repository, name=name, checkpoint=path, verify=False, log=lambda _: None
        )
    served = start_triton(repository)
    try:
        yield served
    finally:
        served.process.stop()


@pytest.fixture(scope="module")
def references(models: dict[str, Any]) -> dict[str, Any]:
    """Each model's own package's predictor, the image set once for both served paths."""
    from sam_triton_export.model_builder import reference_of

    predictors = {}
    for name, sam in models.items():
        predictors[name] = reference_of(sam).predictor(sam)
        predictors[name].set_image(PHOTO)
    return predictors


@pytest.mark.parametrize("name", LIGHT)
def test_reference_is_the_models_own_package(name: str, models: dict[str, Any]) -> None:
    from sam_triton_export.model_builder import reference_of

    sam = models[name]
    assert reference_of(sam).name == REFERENCE[name]
    package = REFERENCE[name].split()[0]
    assert type(sam).__module__.startswith(f"{package}.")
    assert type(sam.image_encoder).__module__.startswith(f"{package}.")
    if name == "mobile":
        # Seeded noise in TinyViT's (zero-initialised) attention biases, and the bias table the
        # encoder runs with follows the loaded weights (eval() after loading rebuilds it).
        attention = sam.image_encoder.layers[1].blocks[0].attn
        assert attention.attention_biases.abs().sum() > 0
        assert attention.ab.equal(attention.attention_biases[:, attention.attention_bias_idxs])


# Both encoders through the stateless models; server-held sessions and automatic masks run the
# same SAM 1 family code whatever the encoder, so one model each keeps the module cheap.
@pytest.mark.parametrize(
    ("name", "server_embeddings"),
    [("mobile", False), ("evit", False), ("mobile", True)],
    ids=["mobile_sam-stateless", "efficientvit-stateless", "mobile_sam-session"],
)
def test_served_masks_match_the_packages_predictor(
    name: str, server_embeddings: bool, light_server: ServedTriton, references: dict[str, Any]
) -> None:
    from sam_triton import RemoteSamPredictor

    reference = references[name]
    prompts: list[dict[str, Any]] = [
        {"point_coords": np.array([[260.0, 190.0]]), "point_labels": np.array([1])},
        {"point_coords": np.array([[100.0, 80.0], [400.0, 300.0]]), "point_labels": np.array([1, 0])},
        {"box": np.array([60.0, 40.0, 450.0, 330.0]), "multimask_output": False},
    ]
    with RemoteSamPredictor(
        light_server.grpc_url, model=name, timeout=120, server_embeddings=server_embeddings
    ) as remote:
        remote.set_image(PHOTO)
        embedding = remote.get_image_embedding()
        # verify measures ~1e-5 (OpenVINO against torch); the EfficientViT test configuration
        # answers a 2% error in the normalising mean with only ~6e-4, so the bound is tight.
        assert np.abs(embedding - reference.features.numpy()).max() < 1e-4
        for prompt in prompts:
            masks, scores, _ = remote.predict(**prompt)
            ref_masks, ref_scores, _ = reference.predict(**prompt)
            assert masks.shape == ref_masks.shape == (len(ref_scores), *PHOTO.shape[:2])
            assert np.abs(scores - ref_scores).max() <= 1e-3
            for ours, theirs in zip(masks, ref_masks, strict=True):
                union = (ours | theirs).sum()
                assert union == 0 or (ours & theirs).sum() / union >= 0.99


def test_automatic_masks_match_the_packages_generator(
    light_server: ServedTriton, models: dict[str, Any]
) -> None:
    name = "evit"  # EfficientViTSamAutomaticMaskGenerator: the reference unlike segment_anything's
    import torch
    from sam_triton import RemoteAutomaticMaskGenerator
    from sam_triton_export.model_builder import reference_of

    image = _photo(120, 160, seed=9)
    # Loose thresholds keep every candidate (the comparison is then about the masks themselves).
    params = {
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0,
    }
    with torch.no_grad():
        reference = (
            reference_of(models[name]).automatic_mask_generator(models[name], **params).generate(image)
        )
    with RemoteAutomaticMaskGenerator(light_server.grpc_url, model=name, timeout=120, **params) as generator:
        ours = generator.generate(image)
    assert len(reference) >= 24, "parity would not be discriminating"
    _assert_parity(reference, ours, image.shape[:2])


@pytest.mark.parametrize(
    ("model_type", "given", "found"),
    [
        ("tiny-test", "mobile", "mobile_sam-tiny-test"),
        ("mobile_sam-tiny-test", "vit", "tiny-test"),
        ("mobile_sam-tiny-test", "evit", "efficientvit_sam-tiny-test"),
    ],
    ids=["mobile_sam-file-as-vit", "vit-file-as-mobile_sam", "efficientvit-file-as-mobile_sam"],
)
def test_checkpoint_of_another_encoder_is_a_clear_error_and_writes_nothing(
    model_type: str,
    given: str,
    found: str,
    checkpoints: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sam_triton.cli import main

    checkpoint = tiny_checkpoint if given == "vit" else checkpoints[given]
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

"""sam_triton.amg.generate against SamAutomaticMaskGenerator on the same (seeded) torch model.

Both sides talk to one torch ``Sam`` built from segment_anything's modeling classes: the
reference through ``SamPredictor``, ours through encode/decode callables. Its decoder gives
realistic, prompt-dependent masks (tests/disc_decoder.py: discs of many sizes and stabilities
around the prompts, edges roughened by the model's own logits), so every filter has work to
do. The decoder (transformer width 32) is narrower than SAM's so the suite stays fast on two
CPU cores; the algorithm under test does not depend on it.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

# The reference's min_mask_region_area path (remove_small_regions) runs on real OpenCV: a
# dev dependency, imported here so that an install without it fails instead of skipping.
import cv2  # noqa: F401
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import segment_anything
import segment_anything.modeling as sam_modeling
import segment_anything.utils.amg as sam_amg
import torch
from sam_triton import amg, rle
from sam_triton.errors import InvalidInputError

from tests.disc_decoder import DiscDecoder

DIM = 32
SEED = 0


def _tiny_sam() -> Any:
    torch.manual_seed(SEED)
    m = sam_modeling
    encoder = m.ImageEncoderViT(
        depth=2,
        embed_dim=64,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=(1,),
        window_size=14,
        out_chans=DIM,
    )
    prompt = m.PromptEncoder(
        embed_dim=DIM, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    decoder = m.MaskDecoder(
        num_multimask_outputs=3,
        transformer=m.TwoWayTransformer(depth=2, embedding_dim=DIM, mlp_dim=4 * DIM, num_heads=2),
        transformer_dim=DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=DIM,
    )
    sam = m.Sam(
        image_encoder=encoder,
        prompt_encoder=prompt,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


@pytest.fixture(scope="module")
def model() -> Any:
    sam = _tiny_sam()
    DiscDecoder(sam, model_weight=30.0)
    return sam


def _backend(sam: Any, cache_encodes: bool = False) -> tuple[Any, Any]:
    """Encode and decode callables for amg.generate; ``cache_encodes`` encodes each distinct
    crop once across runs (the algorithm under test is the same either way)."""
    predictor = segment_anything.SamPredictor(sam)
    encoded: dict[tuple[tuple[int, ...], bytes], Any] = {}

    def encode(crop: np.ndarray) -> Any:
        key = (crop.shape, crop.tobytes())
        if cache_encodes and key in encoded:
            return encoded[key]
        predictor.set_image(crop)
        encoded[key] = predictor.features.clone()
        return encoded[key]

    def decode(features: Any, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            sparse, dense = sam.prompt_encoder(
                points=(torch.as_tensor(coords), torch.as_tensor(labels).int()), boxes=None, masks=None
            )
            low, iou = sam.mask_decoder(
                image_embeddings=features,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
        return low.numpy(), iou.numpy()

    return encode, decode


def _image(h: int = 180, w: int = 240) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 30, (1, 1, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, 40)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img


def _as_masks(records: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    masks = []
    for r in records:
        seg = r["segmentation"]
        if isinstance(seg, dict) and isinstance(seg["counts"], str):
            masks.append(mask_utils.decode({"size": seg["size"], "counts": seg["counts"]}).astype(bool))
        elif isinstance(seg, dict):
            masks.append(rle.rle_to_mask(seg))
        else:
            masks.append(seg)
    return np.stack(masks) if masks else np.zeros((0, *shape), bool)


def _compare(
    ref: list[dict[str, Any]], ours: list[dict[str, Any]], shape: tuple[int, int]
) -> dict[str, float]:
    a = _as_masks(ref, shape).reshape(len(ref), -1).astype(np.float32)
    b = _as_masks(ours, shape).reshape(len(ours), -1).astype(np.float32)
    inter = a @ b.T
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (a.sum(1)[:, None] + b.sum(1)[None, :] - inter)
    iou = np.nan_to_num(iou, nan=1.0)  # two empty masks are the same mask
    matched = float((iou.max(axis=1) >= 0.98).mean()) if len(ref) else 1.0
    extra = float((iou.max(axis=0) < 0.98).mean()) if len(ours) and len(ref) else float(len(ours) > 0)
    return {"matched": matched, "extra": extra}


def _check_records(ref: list[dict[str, Any]], ours: list[dict[str, Any]]) -> None:
    assert len(ours) == len(ref)
    assert all(set(o) == set(r) for r, o in zip(ref, ours, strict=True))
    # Same masks in the same order, same metadata (the reference's int/float types for boxes
    # depend on whether some crop produced nothing; values are what count).
    for r, o in zip(ref, ours, strict=True):
        assert o["area"] == r["area"] and isinstance(o["area"], int)
        assert o["bbox"] == r["bbox"]
        assert o["crop_box"] == r["crop_box"]
        assert o["point_coords"] == r["point_coords"]
        assert o["predicted_iou"] == r["predicted_iou"]
        assert o["stability_score"] == pytest.approx(r["stability_score"], abs=1e-3)


def test_generate_matches_reference_with_crops(model: Any) -> None:
    img = _image()
    kw: dict[str, Any] = {
        "points_per_side": 10,
        "points_per_batch": 32,
        "pred_iou_thresh": 1.0,
        "stability_score_thresh": 0.6,
        "box_nms_thresh": 0.9,
        "crop_n_layers": 1,
        "crop_nms_thresh": 0.8,
    }
    start = time.perf_counter()
    ref = segment_anything.SamAutomaticMaskGenerator(model, **kw).generate(img)
    ref_s = time.perf_counter() - start
    encode, decode = _backend(model)
    start = time.perf_counter()
    ours = amg.generate(img, amg.AmgParams(**kw), encode, decode)
    ours_s = time.perf_counter() - start
    print(f"reference {ref_s:.2f}s ({len(ref)} masks), ours {ours_s:.2f}s with cached decoder outputs")

    assert len(ref) >= 150, "test is not discriminating: too few reference masks"
    assert len({tuple(r["crop_box"]) for r in ref}) == 5, "every crop should contribute masks"
    stats = _compare(ref, ours, img.shape[:2])  # type: ignore[arg-type]
    assert stats["matched"] >= 0.98 and stats["extra"] <= 0.02, stats
    _check_records(ref, ours)  # type: ignore[arg-type]


def test_generate_small_regions_and_output_modes(model: Any) -> None:
    """Small-region clean-up with crops, in both RLE output modes. The reference runs once
    (binary masks) and its records are encoded by its own RLE functions, which is what its
    generate does for those modes; ours runs per mode, encodes cached by crop."""
    img = _image(150, 110)
    kw: dict[str, Any] = {
        "points_per_side": 6,
        "pred_iou_thresh": 1.0,
        "stability_score_thresh": 0.5,
        "box_nms_thresh": 0.9,
        "crop_n_layers": 1,
        "crop_nms_thresh": 0.9,
        "min_mask_region_area": 150,
    }
    reference = segment_anything.SamAutomaticMaskGenerator(model, output_mode="binary_mask", **kw)
    ref_binary = reference.generate(img)
    assert len(ref_binary) >= 30
    encode, decode = _backend(model, cache_encodes=True)
    for output_mode in ("coco_rle", "uncompressed_rle"):
        ref = [{**r, "segmentation": _reference_rle(r["segmentation"], output_mode)} for r in ref_binary]
        ours = amg.generate(img, amg.AmgParams(**kw, output_mode=output_mode), encode, decode)  # type: ignore[arg-type]
        stats = _compare(ref, ours, img.shape[:2])  # type: ignore[arg-type]
        assert stats["matched"] >= 0.98 and stats["extra"] <= 0.02, stats
        _check_records(ref, ours)  # type: ignore[arg-type]
        for r, o in zip(ref, ours, strict=True):
            assert o["segmentation"] == r["segmentation"], output_mode


def _reference_rle(mask: np.ndarray, output_mode: str) -> dict[str, Any]:
    """``mask`` as SamAutomaticMaskGenerator writes it in ``output_mode``."""
    (uncompressed,) = sam_amg.mask_to_rle_pytorch(torch.from_numpy(mask)[None])
    return sam_amg.coco_encode_rle(uncompressed) if output_mode == "coco_rle" else uncompressed


def test_generate_without_masks_returns_empty_list(model: Any) -> None:
    encode, decode = _backend(model)
    params = amg.AmgParams(points_per_side=2, pred_iou_thresh=1e6, crop_n_layers=1, min_mask_region_area=10)
    assert amg.generate(_image(64, 48), params, encode, decode) == []


def test_generate_rejects_bad_images(model: Any) -> None:
    encode, decode = _backend(model)
    params = amg.AmgParams(points_per_side=2)
    with pytest.raises(InvalidInputError):
        amg.generate(np.zeros((10, 10), np.uint8), params, encode, decode)
    with pytest.raises(InvalidInputError):
        amg.generate(np.zeros((10, 10, 3), np.float32), params, encode, decode)
    with pytest.raises(InvalidInputError):  # 1 pixel: the 2x2 crops of layer 1 would be empty
        amg.generate(
            np.zeros((1, 1, 3), np.uint8), amg.AmgParams(points_per_side=2, crop_n_layers=1), encode, decode
        )

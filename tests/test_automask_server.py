"""sam_automask without Triton: wire format, request limits, crop batching, the ONNX decoder
adapter and the generated configs (the end-to-end behaviour is in test_automask_e2e.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
from sam_triton import amg
from sam_triton.errors import InvalidInputError, ServerError
from sam_triton.rle import masks_to_rle
from sam_triton_common.amg.wire import decode_params, decode_result, encode_params, encode_result
from sam_triton_common.proto import automask_pb2
from sam_triton_export.repository import AUTOMASK, TARGETS, RepositoryOptions, repository_files
from sam_triton_server.backend.automask import AutomaskLimits, CropEncoder, OnnxPointDecoder, check_request
from sam_triton_server.backend.prompt_decoder import PromptDecoder

from tests.test_repository import io, parse


# --------------------------------------------------------------------------- wire format
def test_params_round_trip_keeps_doubles_and_grids() -> None:
    params = amg.AmgParams(
        points_per_side=7, crop_n_layers=2, pred_iou_thresh=0.1234567891234, box_nms_thresh=0.7
    )
    back = decode_params(encode_params(params))
    # Exact: the reference compares NMS IoUs with a double threshold and truncates
    # crop_overlap_ratio * side, so float32 rounding on the wire could change results.
    assert back == params and back.crop_overlap_ratio == 512 / 1500
    grids = [amg.build_point_grid(3), amg.build_point_grid(2)]
    with_grids = amg.AmgParams(points_per_side=None, point_grids=grids, crop_n_layers=1)
    back = decode_params(encode_params(with_grids))
    assert back.points_per_side is None
    for a, b in zip(back.layer_grids(), grids, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (automask_pb2.AutomaskParams(points_per_side=0), "point_grids"),
        (
            automask_pb2.AutomaskParams(points_per_side=0, point_grids=[automask_pb2.PointGrid(xy=[0.5])]),
            "pairs",
        ),
        (
            automask_pb2.AutomaskParams(
                points_per_side=4, point_grids=[automask_pb2.PointGrid(xy=[0.5, 0.5])]
            ),
            "not both",
        ),
        (automask_pb2.AutomaskParams(points_per_side=4, points_per_batch=0), "points_per_batch"),
    ],
)
def test_bad_params_are_invalid_input(message: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        decode_params(message.SerializeToString())


def test_garbage_params_are_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="AutomaskParams"):
        decode_params(b"\xff\xff\xff")


def test_result_round_trip() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((3, 5, 7)) < 0.5
    data = amg.MaskData(
        rles=masks_to_rle(masks, offset=(2, 1), image_size=(9, 11)),
        boxes=rng.integers(0, 9, (3, 4)),
        iou_preds=rng.random(3).astype(np.float32),
        points=rng.random((3, 2)) * 10,
        stability_score=rng.random(3).astype(np.float32),
        crop_boxes=np.tile([2, 1, 9, 6], (3, 1)),
    )
    wire = automask_pb2.AutomaskResult.FromString(encode_result(data, (9, 11)).SerializeToString())
    back = decode_result(wire)
    assert back.rles == data.rles
    for field in ("boxes", "iou_preds", "points", "stability_score", "crop_boxes"):
        np.testing.assert_array_equal(getattr(back, field), getattr(data, field))
    assert [r.area for r in wire.records] == [int(m.sum()) for m in masks]
    assert len(decode_result(automask_pb2.AutomaskResult(height=4, width=4))) == 0
    wire.records[0].rle_counts.append(5)
    with pytest.raises(ServerError, match="malformed"):
        decode_result(wire)


# --------------------------------------------------------------------------- limits
def test_check_request_limits() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    params = amg.AmgParams(points_per_side=8, crop_n_layers=1, crop_n_points_downscale_factor=2)
    assert check_request(image, params, AutomaskLimits()) == (5, 64 + 4 * 16)
    bad: list[tuple[np.ndarray, amg.AmgParams, AutomaskLimits, str]] = [
        (image.astype(np.float32), params, AutomaskLimits(), "uint8"),
        (image[..., :2], params, AutomaskLimits(), "RGB"),
        (image[:1], params, AutomaskLimits(), "2x2"),
        (image, params, AutomaskLimits(max_image_pixels=100 * 119), "pixels"),
        (image, params, AutomaskLimits(max_crops=4), "crops"),
        (image, params, AutomaskLimits(max_prompts=127), "prompts"),
        (image, amg.AmgParams(points_per_batch=300), AutomaskLimits(), "points_per_batch"),
        # Counted, not built: 4^16 crop boxes or a 10^9 x 10^9 point grid would never finish.
        (image, amg.AmgParams(points_per_side=2, crop_n_layers=16), AutomaskLimits(), "crops"),
        (image, amg.AmgParams(points_per_side=10**9), AutomaskLimits(), "prompts"),
        # 3 x 2000: a crop of layer 2 would be resized to 0 rows.
        (
            np.zeros((3, 2000, 3), np.uint8),
            amg.AmgParams(points_per_side=2, crop_n_layers=2),
            AutomaskLimits(),
            "crop",
        ),
    ]
    for img, p, limits, match in bad:
        with pytest.raises(InvalidInputError, match=match):
            check_request(img, p, limits)
    with pytest.raises(InvalidInputError, match="crop_n_layers must be <= 16"):
        amg.AmgParams(crop_n_layers=2**31 - 1)  # checking it layer by layer would not finish either


# --------------------------------------------------------------------------- encoder and decoder adapters
def test_crop_encoder_batches_and_releases() -> None:
    calls: list[tuple[int, list[list[int]]]] = []

    def encode_batch(images: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        assert images.shape[1:] == (1024, 1024, 3) and images.dtype == np.uint8
        calls.append((len(images), sizes.tolist()))
        return np.zeros((len(images), 256, 64, 64), np.float32) + np.arange(len(images))[:, None, None, None]

    encoder = CropEncoder(encode_batch, max_batch=2)
    handles = [encoder(np.zeros((h, 50, 3), np.uint8)) for h in (100, 50, 25)]
    assert calls == []  # nothing encoded before the first decode needs it
    assert encoder.embedding(handles[0]).shape == (1, 256, 64, 64)
    assert calls == [(2, [[1024, 512], [1024, 1024]])]
    assert float(encoder.embedding(handles[1])[0, 0, 0, 0]) == 1.0  # second of the batch, no new call
    encoder.embedding(handles[2])
    assert [n for n, _ in calls] == [2, 1] and list(encoder._embeddings) == [2]


class _RecordingSession:
    """A session that records its feeds and answers with fixed arrays."""

    def __init__(self, answer: Callable[[dict[str, np.ndarray]], list[np.ndarray]]) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []
        self._answer = answer

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds.append(feed)
        return self._answer(feed)

    def get_providers(self) -> list[str]:
        return ["recording"]


def test_decoder_adapter_appends_the_padding_point_and_reuses_features() -> None:
    features = _RecordingSession(lambda feed: [np.full((1, 8, 4096, 16), i, np.float32) for i in range(4)])

    def masks(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        p = feed["point_coords"].shape[1]
        return [np.ones((1, p, 3, 256, 256), np.float32), np.full((1, p, 3), 0.5, np.float32)]

    prompts = _RecordingSession(masks)
    encoder = CropEncoder(lambda i, s: np.zeros((len(i), 256, 64, 64), np.float32), 1)
    handle = encoder(np.zeros((10, 10, 3), np.uint8))
    decode = OnnxPointDecoder(PromptDecoder(features, prompts), encoder)
    coords = np.array([[[10.0, 20.0]], [[30.0, 40.0]]])
    low, iou = decode(handle, coords, np.ones((2, 1), np.float32))
    decode(handle, coords, np.ones((2, 1), np.float32))
    assert low.shape == (2, 3, 256, 256) and iou.shape == (2, 3)
    assert len(features.feeds) == 1 and len(prompts.feeds) == 2  # features once per crop
    seen = prompts.feeds[0]
    np.testing.assert_array_equal(seen["point_coords"], [[[[10, 20], [0, 0]], [[30, 40], [0, 0]]]])
    np.testing.assert_array_equal(seen["point_labels"], [[[1, -1], [1, -1]]])
    assert seen["point_coords"].dtype == np.float32 and seen["multimask_output"].tolist() == [[True]]
    assert seen["image_keys"][0, 0, 0, 0] == 0 and seen["image_to_token_queries"][0, 0, 0, 0] == 3
    assert "image_embeddings" not in seen and "mask_input" not in seen


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("target", TARGETS)
def test_automask_config(target: str) -> None:
    options = RepositoryOptions(target=target, max_batch=4)
    files = repository_files(options)
    config = parse(files[f"{AUTOMASK}/config.pbtxt"].decode())
    assert config.backend == "python" and config.max_batch_size == 1
    assert io(config, "input") == {"image": ("TYPE_UINT8", [-1, -1, 3]), "params": ("TYPE_STRING", [1])}
    assert io(config, "output") == {"result": ("TYPE_STRING", [1])}
    params = {key: value.string_value for key, value in config.parameters.items()}
    assert params["onnx_file"] == "../../sam_decoder/1/prompt_decoder.onnx"
    assert params["image_features_file"] == "../../sam_decoder/1/image_features.onnx"
    assert params["encoder_max_batch"] == "4"
    assert {k: int(params[k]) for k in asdict(AutomaskLimits())} == asdict(AutomaskLimits())
    shim = b"from sam_triton_server.backend.models.automask import"
    assert files[f"{AUTOMASK}/1/model.py"].startswith(shim)

"""RemoteSamPredictor against a real tritonserver vs segment_anything.SamPredictor (docs/serving/export.md).

Same seeded tiny-test weights on both sides (the checkpoint the server was exported from),
same images and prompts; every prompt kind and image kind. The predictor runs with its
defaults, i.e. through server-held embeddings (``sam_session``); test_session_e2e.py repeats
a part of the matrix on the stateless path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import segment_anything
import torch
from sam_triton import AsyncSamClient, InvalidInputError, Prompt, RemoteSamPredictor, SamClient
from sam_triton.proto import inference_pb2_grpc as pb_grpc

# ----------------------------------------------------------------------------- helpers


def make_scene(h: int, w: int, seed: int) -> np.ndarray:
    """A synthetic photo: smooth background and a few solid shapes, so masks have structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        img[..., c] = 60 + 40 * np.sin(xx / max(w, 1) * rng.uniform(1, 4) + c) + 30 * (yy / max(h, 1))
    for _ in range(4):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.1, 0.3) * h + 1, rng.uniform(0.1, 0.3) * w + 1
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[inside] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


IOUS: list[float] = []


def assert_same(
    remote: tuple[np.ndarray, ...], ref: tuple[np.ndarray, ...], return_logits: bool = False
) -> None:
    masks, scores, low = remote
    ref_masks, ref_scores, ref_low = ref
    assert masks.shape == ref_masks.shape and masks.dtype == ref_masks.dtype
    assert scores.shape == ref_scores.shape and scores.dtype == ref_scores.dtype == np.float32
    assert low.shape == ref_low.shape and low.dtype == ref_low.dtype == np.float32
    np.testing.assert_allclose(scores, ref_scores, atol=1e-3)
    span = float(ref_low.max() - ref_low.min())
    np.testing.assert_allclose(low, ref_low, atol=1e-3 * max(span, 1.0))
    binary = (masks > 0, ref_masks > 0) if return_logits else (masks, ref_masks)
    ious = [mask_iou(a, b) for a, b in zip(*binary, strict=True)]
    IOUS.extend(ious)
    assert min(ious) >= 0.99, ious


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reference(tiny_sam: Any) -> Any:
    return segment_anything.SamPredictor(tiny_sam)


@pytest.fixture(scope="module")
def remote(triton_server: Any) -> Iterator[RemoteSamPredictor]:
    with RemoteSamPredictor(triton_server.grpc_url, timeout=120) as predictor:
        predictor.client.wait_until_ready(timeout=120)
        yield predictor


def ref_predict(reference: Any, **kw: Any) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        return tuple(reference.predict(**kw))


PROMPTS: list[dict[str, Any]] = [
    {"point_coords": [[0.5, 0.5]], "point_labels": [1]},
    {"point_coords": [[0.3, 0.4], [0.7, 0.6]], "point_labels": [1, 0]},
    {"point_coords": [[0.3, 0.4], [0.6, 0.5], [0.2, 0.9]], "point_labels": [1, 1, 0]},
    {"box": [0.1, 0.2, 0.6, 0.8]},
    {"point_coords": [[0.4, 0.5]], "point_labels": [0], "box": [0.2, 0.2, 0.9, 0.7]},
]


def scaled(prompt: dict[str, Any], h: int, w: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "point_coords" in prompt:
        out["point_coords"] = np.array(prompt["point_coords"]) * [w - 1, h - 1]
        out["point_labels"] = np.array(prompt["point_labels"])
    if "box" in prompt:
        out["box"] = np.array(prompt["box"]) * [w, h, w, h]
    return out


# ----------------------------------------------------------------------------- parity


IMAGES = {
    "photo": (480, 640),
    "portrait": (640, 427),
    "large": (1100, 1800),
    "square_1411": (1411, 1411),
    "exact_1024": (1024, 1024),
    "tiny": (6, 9),
    "strip_wide": (12, 1500),
    "strip_tall": (900, 3),
}


@pytest.mark.parametrize("name", list(IMAGES))
def test_prompt_kinds_match_reference(name: str, remote: RemoteSamPredictor, reference: Any) -> None:
    h, w = IMAGES[name]
    image = make_scene(h, w, seed=h * 31 + w)
    remote.set_image(image)
    assert remote.embedding is not None and remote.embedding.server_held  # only prompts per click
    with torch.no_grad():
        reference.set_image(image)
    assert remote.original_size == reference.original_size == (h, w)
    assert remote.input_size == tuple(reference.input_size)
    ref_emb = reference.get_image_embedding().numpy()
    emb = remote.get_image_embedding()
    assert emb.shape == ref_emb.shape == (1, 256, 64, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, ref_emb, atol=1e-3 * float(np.abs(ref_emb).max()) + 1e-5)
    for prompt in PROMPTS:
        kw = scaled(prompt, h, w)
        for multimask in (True, False):
            assert_same(
                remote.predict(**kw, multimask_output=multimask),
                ref_predict(reference, **kw, multimask_output=multimask),
            )


def test_mask_input_refinement_and_logits(remote: RemoteSamPredictor, reference: Any) -> None:
    image = make_scene(375, 500, seed=7)
    remote.set_image(image)
    with torch.no_grad():
        reference.set_image(image)
    kw = scaled(PROMPTS[0], 375, 500)
    _, ref_scores, ref_low = ref_predict(reference, **kw)
    best = int(np.argmax(ref_scores))
    # Iterative refinement: feed the previous low-res logits back with more clicks.
    for _ in range(3):
        mask_input = ref_low[best][None]
        kw = scaled(PROMPTS[1], 375, 500)
        remote_out = remote.predict(**kw, mask_input=mask_input, multimask_output=False)
        ref_out = ref_predict(reference, **kw, mask_input=mask_input, multimask_output=False)
        assert_same(remote_out, ref_out)
        ref_low, best = ref_out[2], 0
    # return_logits: float masks at full size
    out = remote.predict(**kw, return_logits=True)
    ref = ref_predict(reference, **kw, return_logits=True)
    assert out[0].dtype == np.float32
    span = float(ref[0].max() - ref[0].min())
    np.testing.assert_allclose(out[0], ref[0], atol=2e-3 * max(span, 1.0))
    assert_same(out, ref, return_logits=True)


@pytest.mark.parametrize("server_held", [True, False], ids=["sam_session", "sam_decoder"])
def test_mask_only_and_empty_prompts_match_reference(
    server_held: bool, triton_server: Any, reference: Any
) -> None:
    # SamPredictor accepts a mask_input with no points or box, and even no prompt at all: the
    # sparse prompt is then empty (N = 0 points), which the exported decoder must take too.
    image = make_scene(375, 500, seed=11)
    with torch.no_grad():
        reference.set_image(image)
    _, ref_scores, ref_low = ref_predict(reference, **scaled(PROMPTS[0], 375, 500))
    mask_input = ref_low[int(np.argmax(ref_scores))][None]
    with RemoteSamPredictor(triton_server.grpc_url, timeout=120, server_embeddings=server_held) as remote:
        remote.set_image(image)
        for multimask in (True, False):
            assert_same(
                remote.predict(mask_input=mask_input, multimask_output=multimask),
                ref_predict(reference, mask_input=mask_input, multimask_output=multimask),
            )
            assert_same(
                remote.predict(multimask_output=multimask), ref_predict(reference, multimask_output=multimask)
            )


@pytest.mark.parametrize("kind", ["gray", "rgba", "bgr", "pil", "png_bytes"])
def test_image_kinds(kind: str, remote: RemoteSamPredictor, reference: Any) -> None:
    import io

    from PIL import Image

    rgb = make_scene(300, 400, seed=11)
    if kind == "gray":
        given, image_format, ref_rgb = rgb[..., 1], "RGB", np.repeat(rgb[..., 1:2], 3, axis=2)
    elif kind == "rgba":
        given, image_format, ref_rgb = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGB", rgb
    elif kind == "bgr":
        given, image_format, ref_rgb = np.ascontiguousarray(rgb[..., ::-1]), "BGR", rgb
    elif kind == "pil":
        given, image_format, ref_rgb = Image.fromarray(rgb), "RGB", rgb
    else:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        given, image_format, ref_rgb = buf.getvalue(), "RGB", rgb
    remote.set_image(given, image_format=image_format)
    with torch.no_grad():
        if kind == "bgr":
            reference.set_image(given, image_format="BGR")  # the reference's own BGR path
        else:
            reference.set_image(ref_rgb)
    kw = scaled(PROMPTS[1], 300, 400)
    assert_same(remote.predict(**kw), ref_predict(reference, **kw))


def test_mean_iou(remote: RemoteSamPredictor, reference: Any) -> None:
    """The mean mask IoU over every parity comparison this run made; run alone (or with -k),
    it makes the first image's comparisons itself rather than skip."""
    if not IOUS:
        test_prompt_kinds_match_reference(next(iter(IMAGES)), remote, reference)
    assert float(np.mean(IOUS)) >= 0.995


# ----------------------------------------------------------------------------- predictor API


def test_predictor_api(remote: RemoteSamPredictor, triton_server: Any) -> None:
    fresh = RemoteSamPredictor(triton_server.grpc_url)
    with pytest.raises(
        RuntimeError, match=r"An image must be set with \.set_image\(\.\.\.\) before mask prediction"
    ):
        fresh.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(RuntimeError, match="to generate an embedding"):
        fresh.get_image_embedding()
    assert not fresh.is_image_set and fresh.features is None
    fresh.close()

    image = make_scene(200, 300, seed=3)
    remote.set_image(image)
    assert remote.is_image_set and remote.features is not None
    # a bad image leaves the current one in place
    with pytest.raises(InvalidInputError):
        remote.set_image(np.zeros((1, 1, 3), np.uint8))
    assert remote.is_image_set and remote.original_size == (200, 300)

    prompts = [Prompt([[50, 60]], [1]), {"box": [10, 10, 200, 150]}, Prompt([[50, 60], [100, 100]], [1, 0])]
    batch = remote.predict_batch(prompts, multimask_output=False)
    singles = [
        remote.predict(point_coords=[[50, 60]], point_labels=[1], multimask_output=False),
        remote.predict(box=[10, 10, 200, 150], multimask_output=False),
        remote.predict(point_coords=[[50, 60], [100, 100]], point_labels=[1, 0], multimask_output=False),
    ]
    for pred, single in zip(batch, singles, strict=True):
        np.testing.assert_allclose(pred.scores, single[1], atol=1e-5)
        np.testing.assert_allclose(pred.low_res_logits, single[2], atol=1e-4)
    # the drop-in transform
    np.testing.assert_allclose(
        remote.transform.apply_coords(np.array([[300.0, 200.0]]), (200, 300)), [[1024, 683]]
    )
    remote.reset_image()
    assert not remote.is_image_set and remote.original_size is None


def test_segment_one_round_trip_matches_predict(triton_server: Any) -> None:
    image = make_scene(240, 320, seed=5)
    prompt = Prompt([[100, 120], [200, 50]], [1, 0])
    with SamClient(triton_server.grpc_url) as client:
        one = client.segment(image, prompt)
        two = client.predict(client.embed(image), prompt, low_res_logits=True)
    assert not isinstance(one, list) and not isinstance(two, list)
    np.testing.assert_allclose(one.scores, two.scores, atol=1e-5)
    np.testing.assert_allclose(one.low_res_logits, two.low_res_logits, atol=1e-4)


def test_async_concurrency_equals_sequential(triton_server: Any) -> None:
    images = [make_scene(100 + 37 * i, 160 + 11 * i, seed=i) for i in range(6)]
    prompts = [Prompt([[20 + 5 * i, 30]], [1]) for i in range(6)]
    with SamClient(triton_server.grpc_url) as client:
        sequential = [
            client.predict(client.embed(im), p, low_res_logits=True)
            for im, p in zip(images, prompts, strict=True)
        ]

    async def concurrent() -> list[Any]:
        async with AsyncSamClient(triton_server.grpc_url) as aclient:

            async def one(i: int) -> Any:
                return await aclient.predict(await aclient.embed(images[i]), prompts[i], low_res_logits=True)

            return await asyncio.gather(*(one(i) for i in range(6)))

    results = asyncio.run(concurrent())
    for got, want in zip(results, sequential, strict=True):
        # Triton may batch concurrent requests; batched onnxruntime kernels can differ in the
        # last float bits from unbatched ones, nothing more.
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-4)
        assert mask_iou(got.masks, want.masks) >= 0.999


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_rejected_server_keeps_answering(triton_server: Any) -> None:
    import grpc
    from sam_triton import errors
    from sam_triton._tensors import build_infer_request

    image = make_scene(120, 160, seed=9)
    prompt = Prompt([[40, 50]], [1])
    with SamClient(triton_server.grpc_url) as client:
        before = client.segment(image, prompt)
        emb = client.embed(image)
        with pytest.raises(InvalidInputError):
            client.predict(emb, Prompt([[400, 50]], [1]))
        with pytest.raises(InvalidInputError):
            client.embed(np.zeros((0, 4, 3), np.uint8))
        embedding = client.fetch_embedding(emb)

    # Raw gRPC, bypassing client-side validation: the server itself must refuse cleanly.
    good = {
        "image_embeddings": embedding[None],
        "point_coords": np.zeros((1, 1, 2, 2), np.float32),
        "point_labels": np.array([[[1, -1]]], np.float32),
        "mask_input": np.zeros((1, 1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros((1, 1), np.float32),
        "multimask_output": np.array([[True]]),
    }
    bad_requests = [
        ("sam_decoder", {**good, "point_coords": np.full((1, 1, 2, 2), np.nan, np.float32)}),
        ("sam_decoder", {**good, "point_labels": np.array([[[7, -1]]], np.float32)}),
        ("sam_decoder", {**good, "point_coords": np.zeros((1, 1, 2, 3), np.float32)}),
        ("sam_decoder", {**good, "image_embeddings": np.zeros((1, 256, 32, 32), np.float32)}),
        ("sam_decoder", {**good, "point_labels": good["point_labels"].astype(np.int32)}),
        ("sam_decoder", {k: v for k, v in good.items() if k != "mask_input"}),
        (
            "sam_encoder",
            {"image": np.zeros((1, 512, 512, 3), np.uint8), "input_size": np.array([[512, 512]], np.int32)},
        ),
        (
            "sam_encoder",
            {"image": np.zeros((1, 1024, 1024, 3), np.uint8), "input_size": np.array([[0, 2000]], np.int32)},
        ),
        ("no_such_model", good),
    ]
    channel = grpc.insecure_channel(
        triton_server.grpc_url, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        for model, inputs in bad_requests:
            request = build_infer_request(model, inputs, [])
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=60)
            err = errors.from_rpc_error(info.value)
            assert isinstance(err, (errors.InvalidInputError, errors.ModelNotFoundError)), (model, err)
            assert err.server_message
    finally:
        channel.close()

    with SamClient(triton_server.grpc_url) as client:
        assert client.server_live()
        after = client.segment(image, prompt)
    assert not isinstance(before, list) and not isinstance(after, list)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.masks, before.masks)

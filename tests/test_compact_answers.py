"""Compact click answers on the served tiny-test model (``sam_session``), end to end.

- the server's masks are the very bits the SDK makes from the logits today (same response's
  logits, and a client on the wire format before: ``compact_answers=False``), multimask on and
  off, odd sizes and long strips;
- a click's bytes (request + response) are its encoded masks and a few hundred bytes more, fewer
  than the logits' (tenfold fewer on a 375x500 image even with random weights' noise-like masks);
- a refinement that names the kept mask uploads no logits and gives the same masks as
  uploading them; one this server lacks is made again from its prompt; one that names nothing
  the SDK can make again is a typed error and the server keeps serving;
- bad compact requests are refused with INVALID_ARGUMENT.
SAM 2's side is in test_sam2.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from sam_triton import (
    InvalidInputError,
    Prediction,
    PredictionNotFoundError,
    PreviousMask,
    Prompt,
    RemoteSamPredictor,
    SamClient,
)
from sam_triton._core import SESSION_HEADER
from sam_triton._tensors import build_infer_request
from sam_triton.proto import inference_pb2 as pb
from sam_triton.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from sam_triton.transforms import postprocess_to_masks

from tests.test_predictor_e2e import make_scene


@pytest.fixture(scope="module")
def clients(triton_server: Any) -> Iterator[tuple[SamClient, SamClient]]:
    """(compact: the default, before: the wire format without compact answers)."""
    with (
        SamClient(triton_server.grpc_url, timeout=300) as compact,
        SamClient(triton_server.grpc_url, timeout=300, compact_answers=False) as before,
    ):
        yield compact, before


def _prompts(h: int, w: int) -> list[Prompt]:
    return [
        Prompt([[0.5 * (w - 1), 0.5 * (h - 1)]], [1]),
        Prompt([[0.2 * (w - 1), 0.3 * (h - 1)], [0.7 * (w - 1), 0.6 * (h - 1)]], [1, 0]),
        Prompt(box=[0.1 * w, 0.2 * h, 0.8 * w, 0.9 * h]),
    ]


@pytest.mark.parametrize("size", [(17, 23), (9, 1500), (1500, 9), (375, 500)])
@pytest.mark.parametrize("multimask", [True, False])
def test_server_masks_are_the_bits_the_sdk_makes(
    clients: tuple[SamClient, SamClient], size: tuple[int, int], multimask: bool
) -> None:
    compact, before = clients
    image = make_scene(*size, seed=size[0] * 7 + size[1])
    emb = compact.embed(image)
    prompts = _prompts(*size)
    got = compact.predict(emb, prompts, multimask, low_res_logits=True)
    old = before.predict(emb, prompts, multimask)
    assert isinstance(got, list) and isinstance(old, list)
    for new, want in zip(got, old, strict=True):
        assert new.encoded_masks and new.low_res_logits is not None
        masks = new.masks  # decoded from the server's bytes
        assert masks.dtype == np.bool_ and masks.shape == ((3 if multimask else 1), *size)
        # the same response's logits through the SDK's own postprocessing: the same bits
        np.testing.assert_array_equal(masks, postprocess_to_masks(new.low_res_logits, emb.input_size, size))
        # and the wire format before (masks made here) on the same embedding
        np.testing.assert_array_equal(new.low_res_logits, want.low_res_logits)
        np.testing.assert_array_equal(masks, want.masks)
        np.testing.assert_array_equal(new.scores, want.scores)


@pytest.mark.parametrize("size", [(1411, 1411), (375, 500)])
def test_compact_clicks_carry_their_masks_and_little_else(triton_server: Any, size: tuple[int, int]) -> None:
    """Request + response bytes of the same multimask clicks (SamClient's defaults) from a
    default client and from one on the wire format before, side by side."""
    image = make_scene(*size, seed=3)
    wire: dict[str, list[int]] = {"compact": [], "before": []}
    url = triton_server.grpc_url
    with (
        SamClient(url, timeout=300, rpc_observer=lambda m, s, r: wire["compact"].append(s + r)) as compact,
        SamClient(
            url, timeout=300, compact_answers=False, rpc_observer=lambda m, s, r: wire["before"].append(s + r)
        ) as before,
    ):
        handles = {"compact": compact.embed(image), "before": before.embed(image)}  # the 2nd: a lookup
        clients = {"compact": compact, "before": before}
        for name in wire:
            wire[name].clear()  # the embeds' calls
            for prompt in _prompts(*size)[:2]:
                assert isinstance(clients[name].predict(handles[name], prompt), Prediction)
        answers = [compact.predict(handles["compact"], p) for p in _prompts(*size)[:2]]
    new, old = wire["compact"][:2], wire["before"]
    print(f"\nclick bytes (request + response) at {size}: compact {new}, before {old}")
    assert len(new) == len(old) == 2  # one call per click, nothing else
    assert all(o > 3 * 256 * 256 * 4 for o in old)  # three masks' logits each
    # the compact answer is its encoded masks and little else: never the logits
    for total, answer in zip(new, answers, strict=True):
        assert isinstance(answer, Prediction) and answer.low_res_logits is None
        encoded = sum(len(e) for e in answer.encoded_masks)
        assert encoded < total < encoded + 1024
    # random weights make masks as fragmented as noise (an object's mask is a few KB, see
    # test_mask_codec), so the ratio depends on the image's size: tenfold on 375x500
    assert sum(new) * (10 if size == (375, 500) else 1.5) <= sum(old)


def test_refinement_names_the_kept_mask(clients: tuple[SamClient, SamClient], triton_server: Any) -> None:
    compact, before = clients
    size = (480, 640)
    image = make_scene(*size, seed=41)
    emb = compact.embed(image)
    first = compact.predict(emb, Prompt([[300, 200]], [1]), low_res_logits=True)
    assert isinstance(first, Prediction) and first.low_res_logits is not None
    sent: list[int] = []
    with SamClient(
        triton_server.grpc_url, timeout=300, rpc_observer=lambda m, s, r: sent.append(s)
    ) as counting:
        for k in range(3):
            follow_up = Prompt([[300, 200], [100, 400]], [1, 0], mask_input=first.mask_input(k))
            refined = counting.predict(emb, follow_up, low_res_logits=True)
            uploaded = before.predict(
                emb, Prompt([[300, 200], [100, 400]], [1, 0], mask_input=first.low_res_logits[k][None])
            )
            assert isinstance(refined, Prediction) and isinstance(uploaded, Prediction)
            np.testing.assert_array_equal(refined.masks, uploaded.masks)
            np.testing.assert_array_equal(refined.scores, uploaded.scores)
            np.testing.assert_array_equal(refined.low_res_logits, uploaded.low_res_logits)
        assert max(sent) < 1024  # no 256 KiB mask went up
        # refining a refinement: its own id is kept too
        again = counting.predict(emb, Prompt([[300, 200]], [1], mask_input=refined.mask_input()))
        assert isinstance(again, Prediction) and again.prediction_id not in (None, refined.prediction_id)


def test_refinement_of_nothing_held_is_a_typed_error(
    clients: tuple[SamClient, SamClient], triton_server: Any
) -> None:
    compact, _ = clients
    image = make_scene(300, 400, seed=42)
    emb = compact.embed(image)
    with pytest.raises(PredictionNotFoundError, match="prediction not found") as info:
        compact.predict(emb, Prompt([[10, 10]], [1], mask_input=PreviousMask("0" * 32, 0)))
    assert info.value.code == "NOT_FOUND"
    first = compact.predict(emb, Prompt([[100, 100]], [1]))
    assert isinstance(first, Prediction) and first.prediction_id is not None
    with pytest.raises(InvalidInputError, match="refine_mask 3 is out of range"):
        compact.predict(emb, Prompt([[10, 10]], [1], mask_input=PreviousMask(first.prediction_id, 3)))
    # a caller-named session rebound to another image cannot refine the old image's masks
    named = compact.embed(image, session_id="compact-rebound")
    kept = compact.predict(named, Prompt([[100, 100]], [1]))
    assert isinstance(kept, Prediction)
    rebound = compact.embed(make_scene(300, 400, seed=43), session_id="compact-rebound")
    with pytest.raises(PredictionNotFoundError, match="another image"):
        compact.predict(rebound, Prompt([[100, 100]], [1], mask_input=kept.mask_input()))
    # the server keeps serving, and a good refinement after all that works
    assert compact.server_ready()
    good = compact.predict(emb, Prompt([[100, 100]], [1], mask_input=first.mask_input()))
    assert isinstance(good, Prediction) and good.masks.shape == (3, 300, 400)


def test_a_kept_mask_this_server_lacks_is_made_again(clients: tuple[SamClient, SamClient]) -> None:
    """A PreviousMask this server never made (another replica made it before the session moved
    here): the SDK makes it again from its prompt and the refinement equals uploading its logits."""
    compact, before = clients
    emb = compact.embed(make_scene(300, 400, seed=46))
    origin = Prompt([[150, 120]], [1])
    elsewhere = PreviousMask("f" * 32, 1, origin=(origin, True))
    got = compact.predict(emb, Prompt([[150, 120], [300, 200]], [1, 0], mask_input=elsewhere))
    made = before.predict(emb, origin)
    assert isinstance(made, Prediction) and made.low_res_logits is not None
    want = before.predict(
        emb, Prompt([[150, 120], [300, 200]], [1, 0], mask_input=made.low_res_logits[1][None])
    )
    assert isinstance(got, Prediction) and isinstance(want, Prediction)
    np.testing.assert_array_equal(got.masks, want.masks)
    np.testing.assert_array_equal(got.scores, want.scores)


def _raw_click(url: str, session_id: str, extra: dict[str, np.ndarray]) -> Any:
    inputs = {
        "session_id": np.array([[session_id.encode()]], dtype=np.object_),
        "point_coords": np.array([[[[100.0, 100.0], [0.0, 0.0]]]], np.float32),
        "point_labels": np.array([[[1.0, -1.0]]], np.float32),
        "multimask_output": np.array([[True]]),
        **extra,
    }
    request = build_infer_request("sam_session", inputs, ["masks", "iou_predictions"])
    with grpc.insecure_channel(url) as channel:
        return GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=((SESSION_HEADER, session_id),))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "masks requested without original_size"),
        ({"original_size": np.array([[300, 401]], np.int32)}, "not the embedded image's size"),
        ({"original_size": np.array([[300.0, 400.0]], np.float32)}, "expects 'INT32'"),
        ({"original_size": np.array([[0, 400]], np.int32)}, "expected positive sides"),
        ({"refine_from": np.array([[b"x"]], np.object_)}, "refine_from and refine_mask go together"),
    ],
    ids=["no-size", "wrong-size", "float-size", "zero-size", "refine-without-index"],
)
def test_bad_compact_requests_are_invalid_argument(
    clients: tuple[SamClient, SamClient], triton_server: Any, extra: dict[str, np.ndarray], message: str
) -> None:
    compact, _ = clients
    emb = compact.embed(make_scene(300, 400, seed=44))
    assert emb.session_id is not None
    with pytest.raises(grpc.RpcError) as info:
        _raw_click(triton_server.grpc_url, emb.session_id, extra)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in str(info.value.details())
    response = _raw_click(
        triton_server.grpc_url, emb.session_id, {"original_size": np.array([[300, 400]], np.int32)}
    )
    assert isinstance(response, pb.ModelInferResponse)  # still serving


def test_predictor_keeps_the_reference_values_unless_compact(triton_server: Any) -> None:
    image = make_scene(240, 320, seed=45)
    with RemoteSamPredictor(triton_server.grpc_url, timeout=300) as like_reference:
        like_reference.set_image(image)
        masks, scores, logits = like_reference.predict(point_coords=[[100, 120]], point_labels=[1])
    with RemoteSamPredictor(triton_server.grpc_url, timeout=300, compact=True) as compact:
        compact.set_image(image)
        cmasks, cscores, clogits = compact.predict(point_coords=[[100, 120]], point_labels=[1])
        assert compact.last_prediction is not None
        refine = compact.last_prediction.mask_input()
        rmasks, _, _ = compact.predict(point_coords=[[100, 120]], point_labels=[1], mask_input=refine)
        _, _, ref_refined = like_reference_refine(triton_server.grpc_url, image, logits[refine.index][None])
    assert logits is not None and logits.shape == (3, 256, 256) and clogits is None
    np.testing.assert_array_equal(cmasks, masks)
    np.testing.assert_array_equal(cscores, scores)
    np.testing.assert_array_equal(rmasks, ref_refined)


def like_reference_refine(url: str, image: np.ndarray, mask_input: np.ndarray) -> tuple[Any, ...]:
    with RemoteSamPredictor(url, timeout=300) as predictor:
        predictor.set_image(image)
        masks, scores, logits = predictor.predict(
            point_coords=[[100, 120]], point_labels=[1], mask_input=mask_input
        )
    return scores, logits, masks

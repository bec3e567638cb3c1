"""Server-held embeddings in the SDK, against the in-process fake's toy ``sam_session``.

Fast and deterministic: which calls go out (lookup before upload, prompts only per click),
with which tensors and headers, what a cache miss does (transparent re-embed when the handle
holds the image, EmbeddingNotFoundError when it does not), id validation, sync = async.
The same behaviour against a real tritonserver is in test_session_e2e.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sam_triton import (
    AsyncSamClient,
    EmbeddingNotFoundError,
    ImageEmbedding,
    InvalidInputError,
    ModelNotFoundError,
    Prediction,
    PredictionNotFoundError,
    PreviousMask,
    Prompt,
    RemoteSamPredictor,
    SamClient,
)
from sam_triton._core import SESSION_HEADER, content_id

from tests.test_client import Served, as_pixels, decode_request, serve, toy_encoder

IMAGE = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
CLICK = Prompt([[120, 80]], [1])


@pytest.fixture
def fake() -> Iterator[Served]:
    served = serve()
    yield served
    served.server.stop(None)


def client_for(fake: Served, **kw: Any) -> SamClient:
    return SamClient(fake.url, backoff=0.01, **kw)


def calls(fake: Served) -> list[tuple[str, set[str], list[str]]]:
    """(model, input names, requested outputs) of every ModelInfer so far."""
    return [
        (c.model_name, {t.name for t in c.inputs}, [o.name for o in c.outputs]) for c in fake.behaviour.calls
    ]


def uploads(call: Any) -> bool:
    """Whether a ModelInfer carries an image (its pixels, or a file of them)."""
    return bool({"image", "encoded_image"} & {t.name for t in call.inputs})


def session_ids(fake: Served) -> list[str]:
    return [m.get(SESSION_HEADER, "") for m in fake.behaviour.metadata]


def test_embed_looks_up_then_uploads_once(fake: Served) -> None:
    with client_for(fake) as client:
        emb = client.embed(IMAGE)
        assert emb.server_held and emb.embedding is None
        assert emb.session_id == content_id(IMAGE) and emb.session_id.startswith("sha256:")
        assert emb.original_size == (300, 500) and emb.input_size == (614, 1024)
        assert calls(fake) == [
            ("sam_session", {"session_id"}, ["cache_hit"]),  # lookup: the id only
            # miss: upload, as a PNG of the 300x500 pixels (fewer bytes than the padded 1024x1024 tensor)
            ("sam_session", {"session_id", "encoded_image"}, ["cache_hit"]),
        ]
        # the same pixels again, even as a BGR view of a copy: one lookup, no upload
        again = client.embed(np.ascontiguousarray(IMAGE[..., ::-1]), image_format="BGR")
        assert again.session_id == emb.session_id
        assert calls(fake)[2:] == [("sam_session", {"session_id"}, ["cache_hit"])]
        assert fake.behaviour.calls[2].ByteSize() < 512
        # other pixels, other id
        other = IMAGE.copy()
        other[0, 0, 0] ^= 1
        assert client.embed(other).session_id != emb.session_id
    # every session call names its session in the routing header
    assert session_ids(fake) == [emb.session_id] * 3 + [content_id(other)] * 2


def test_click_sends_prompts_only(fake: Served) -> None:
    with client_for(fake) as client, client_for(fake, server_embeddings=False) as stateless:
        emb = client.embed(IMAGE)
        n = len(fake.behaviour.calls)
        pred = client.predict(emb, CLICK)
        (req,) = fake.behaviour.calls[n:]
        assert req.model_name == "sam_session"
        # no embedding, no image, and no empty 256x256 mask_input: the id, the points and the
        # image's size, for the masks the server makes (compact answers, the default)
        assert {t.name for t in req.inputs} == {
            "session_id",
            "point_coords",
            "point_labels",
            "multimask_output",
            "original_size",
        }
        assert [o.name for o in req.outputs] == ["iou_predictions", "prediction_id", "masks"]
        assert req.ByteSize() < 1024
        assert fake.behaviour.metadata[-1][SESSION_HEADER] == emb.session_id
        # same answer as the stateless path (embedding sent along to sam_decoder)
        ref = stateless.predict(stateless.embed(IMAGE), CLICK)
    assert not isinstance(pred, list) and not isinstance(ref, list)
    assert pred.low_res_logits is None and ref.low_res_logits is not None  # not asked for
    np.testing.assert_array_equal(pred.masks, ref.masks)
    np.testing.assert_array_equal(pred.scores, ref.scores)
    assert fake.behaviour.calls[-1].model_name == "sam_decoder"


def test_miss_reembeds_once_transparently(fake: Served) -> None:
    prompts = [Prompt([[100, 100]], [1]), Prompt([[10, 10], [20, 20]], [1, 0])]  # two groups
    with client_for(fake) as client:
        emb = client.embed(IMAGE)
        before = client.predict(emb, prompts)
        fake.behaviour.sessions.clear()  # evicted / server restarted
        n = len(fake.behaviour.calls)
        after = client.predict(emb, prompts)
        models = [(c.model_name, uploads(c)) for c in fake.behaviour.calls[n:]]
    # a miss, exactly one upload, then both groups answered. The two groups travel
    # concurrently, so the second one may miss too or arrive after the upload and hit.
    assert models[0] == ("sam_session", False)
    assert models.count(("sam_session", True)) == 1
    upload = models.index(("sam_session", True))
    assert models[upload + 1 :] == [("sam_session", False)] * 2
    assert upload in (1, 2)
    assert isinstance(before, list) and isinstance(after, list)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.low_res_logits, b.low_res_logits)


def test_miss_without_image_raises(fake: Served) -> None:
    with client_for(fake) as client:
        bare = ImageEmbedding(None, (300, 500), (614, 1024), "never-embedded")
        with pytest.raises(EmbeddingNotFoundError) as info:
            client.predict(bare, CLICK)
        assert info.value.code == "NOT_FOUND" and "never-embedded" in str(info.value)
        with pytest.raises(EmbeddingNotFoundError):
            client.fetch_embedding(bare)
        assert not client.has_embedding("never-embedded")
        # the same id with the image kept on the handle recovers
        emb = client.embed(IMAGE)
        rebound = dataclasses.replace(emb, session_id="never-embedded")
        assert not isinstance(client.predict(rebound, CLICK), list)
        assert client.has_embedding("never-embedded")


def test_caller_ids_always_upload_and_are_validated(fake: Served) -> None:
    with client_for(fake) as client:
        emb = client.embed(IMAGE, session_id="user-7/page 1")
        assert emb.session_id == "user-7/page 1" and emb.server_held
        # a caller id is bound to the image given, so it is uploaded every time (no lookup)
        client.embed(IMAGE, session_id="user-7/page 1")
        assert [uploads(c) for c in fake.behaviour.calls] == [True, True]
        n = len(fake.behaviour.calls)
        for bad in ["", "x" * 257, "sha256:" + "0" * 64, "caf\u00e9", "tab\there", 7]:
            with pytest.raises(InvalidInputError, match="session_id"):
                client.embed(IMAGE, session_id=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="session_id"):
            client.has_embedding("")
        assert len(fake.behaviour.calls) == n  # refused before anything was sent
        assert client.has_embedding("x" * 256) is False  # the longest valid id


def test_fetch_embedding_and_predictor(fake: Served) -> None:
    with RemoteSamPredictor(fake.url, backoff=0.01) as predictor:
        predictor.set_image(IMAGE)
        assert predictor.embedding is not None and predictor.embedding.server_held
        n = len(fake.behaviour.calls)
        masks, scores, low = predictor.predict(point_coords=[[120, 80]], point_labels=[1])
        assert masks.shape == (3, 300, 500) and masks.dtype == np.bool_
        assert len(fake.behaviour.calls) == n + 1  # one prompt-only request
        # the embedding is downloaded only when asked for, once
        emb = predictor.get_image_embedding()
        assert emb.shape == (1, 256, 64, 64) and emb.dtype == np.float32
        expected = toy_encoder(as_pixels(decode_request(fake.behaviour.calls[1])))
        np.testing.assert_array_equal(emb, expected)
        assert predictor.features is emb
        assert len(fake.behaviour.calls) == n + 2
        # eviction under the predictor: transparent
        fake.behaviour.sessions.clear()
        again = predictor.predict(point_coords=[[120, 80]], point_labels=[1])
        np.testing.assert_array_equal(again[2], low)
        predictor.reset_image()
        assert predictor.features is None


def test_handle_keeps_a_private_copy_of_the_callers_array(fake: Served) -> None:
    image = IMAGE.copy()
    with client_for(fake) as client:
        emb = client.embed(image)
        expected = client.predict(emb, CLICK)
        image[:] = 0  # the caller reuses its buffer
        fake.behaviour.sessions.clear()
        got = client.predict(emb, CLICK)  # re-embeds the original pixels
    assert not isinstance(expected, list) and not isinstance(got, list)
    np.testing.assert_array_equal(got.low_res_logits, expected.low_res_logits)


def test_server_without_session_model(fake: Served) -> None:
    fake.behaviour.session_model = False
    with client_for(fake) as client, pytest.raises(ModelNotFoundError, match="server_embeddings=False"):
        client.embed(IMAGE)
    with client_for(fake, server_embeddings=False) as client:
        assert client.embed(IMAGE).embedding is not None


def test_async_session_path_matches_sync(fake: Served) -> None:
    with client_for(fake) as client:
        expected = client.predict(client.embed(IMAGE), CLICK)
    fake.behaviour.sessions.clear()
    fake.behaviour.calls.clear()

    async def main() -> tuple[Any, Any, np.ndarray]:
        async with AsyncSamClient(fake.url, backoff=0.01) as aclient:
            emb = await aclient.embed(IMAGE)
            first = await aclient.predict(emb, CLICK)
            fake.behaviour.sessions.clear()
            second = await aclient.predict(emb, CLICK)  # miss -> re-embed, inside the event loop
            return first, second, await aclient.fetch_embedding(emb)

    first, second, array = asyncio.run(main())
    for got in (first, second):
        np.testing.assert_array_equal(got.low_res_logits, expected.low_res_logits)
        np.testing.assert_array_equal(got.masks, expected.masks)
    assert array.shape == (256, 64, 64)
    assert [c.model_name for c in fake.behaviour.calls] == ["sam_session"] * 7
    assert all(m.get(SESSION_HEADER) == content_id(IMAGE) for m in fake.behaviour.metadata)


def test_wait_until_ready_includes_session_model(fake: Served) -> None:
    with client_for(fake) as client:
        client.wait_until_ready(timeout=5)
    fake.behaviour.session_model = False
    with client_for(fake) as client, pytest.raises(Exception, match="sam_session"):
        client.wait_until_ready(timeout=0.3)
    with client_for(fake, server_embeddings=False) as client:
        client.wait_until_ready(timeout=5)


def test_mask_input_travels_only_when_a_prompt_has_one(fake: Served) -> None:
    mask = np.random.default_rng(1).standard_normal((1, 256, 256)).astype(np.float32)
    with client_for(fake) as client:
        emb = client.embed(IMAGE)
        n = len(fake.behaviour.calls)
        preds = client.predict(emb, [CLICK, Prompt([[10, 20]], [1], mask_input=mask)])
        (req,) = fake.behaviour.calls[n:]  # one group: both have N=2 after padding
        inputs = decode_request(req)
        assert inputs["has_mask_input"].tolist() == [[0.0, 1.0]]
        np.testing.assert_array_equal(inputs["mask_input"][0, 1], mask)
        assert 256 * 1024 < req.ByteSize() < 2 * 256 * 1024 + 1024
    assert isinstance(preds, list) and len(preds) == 2


def test_compact_answers_are_opt_out_and_logits_on_request(fake: Served) -> None:
    """compact_answers=False is the wire format before it (logits, masks made here); both give
    the same masks, and low_res_logits=True adds the logits to a compact answer."""
    with client_for(fake) as compact, client_for(fake, compact_answers=False) as legacy:
        emb = compact.embed(IMAGE)
        n = len(fake.behaviour.calls)
        old = legacy.predict(emb, CLICK)
        new = compact.predict(emb, CLICK, low_res_logits=True)
        with_logits, compact_req = fake.behaviour.calls[n:]
    assert [o.name for o in with_logits.outputs] == ["low_res_masks", "iou_predictions"]
    assert "original_size" not in {t.name for t in with_logits.inputs}
    assert [o.name for o in compact_req.outputs] == [
        "iou_predictions",
        "prediction_id",
        "low_res_masks",
        "masks",
    ]
    assert isinstance(old, Prediction) and isinstance(new, Prediction)
    assert old.prediction_id is None and old.encoded_masks == () and new.encoded_masks
    np.testing.assert_array_equal(new.masks, old.masks)
    np.testing.assert_array_equal(new.low_res_logits, old.low_res_logits)


def test_refinement_names_the_kept_mask_instead_of_uploading_it(fake: Served) -> None:
    with client_for(fake) as client, client_for(fake, compact_answers=False) as legacy:
        emb = client.embed(IMAGE)
        first = client.predict(emb, CLICK, low_res_logits=True)
        assert isinstance(first, Prediction) and first.low_res_logits is not None
        kept = first.mask_input()
        assert kept == PreviousMask(str(first.prediction_id), first.best())
        n = len(fake.behaviour.calls)
        refined = client.predict(emb, Prompt([[120, 80], [30, 40]], [1, 0], mask_input=kept))
        (req,) = fake.behaviour.calls[n:]
        inputs = decode_request(req)
        assert "mask_input" not in inputs and req.ByteSize() < 1024
        assert inputs["refine_from"].tolist() == [[str(first.prediction_id).encode()]]
        assert inputs["refine_mask"].tolist() == [[first.best()]]
        # the same masks as uploading that mask's logits
        uploaded = legacy.predict(
            emb, Prompt([[120, 80], [30, 40]], [1, 0], mask_input=first.low_res_logits[first.best()][None])
        )
        assert isinstance(refined, Prediction) and isinstance(uploaded, Prediction)
        np.testing.assert_array_equal(refined.masks, uploaded.masks)
        # a mask never kept is a typed error, and so is naming one on the stateless path
        with pytest.raises(PredictionNotFoundError, match="prediction not found"):
            client.predict(emb, Prompt([[1, 1]], [1], mask_input=PreviousMask("never-made", 0)))
    with (
        client_for(fake, server_embeddings=False) as stateless,
        pytest.raises(InvalidInputError, match="PreviousMask"),
    ):
        stateless.predict(stateless.embed(IMAGE), Prompt([[1, 1]], [1], mask_input=kept))


def test_predictor_keeps_the_reference_return_values_unless_compact(fake: Served) -> None:
    with RemoteSamPredictor(fake.url, backoff=0.01) as reference_like:
        reference_like.set_image(IMAGE)
        masks, scores, logits = reference_like.predict(np.array([[120, 80]]), np.array([1]))
    with RemoteSamPredictor(fake.url, compact=True, backoff=0.01) as compact:
        compact.set_image(IMAGE)
        cmasks, cscores, clogits = compact.predict(np.array([[120, 80]]), np.array([1]))
        assert compact.last_prediction is not None
        refine = compact.last_prediction.mask_input()
        compact.predict(np.array([[120, 80]]), np.array([1]), mask_input=refine)
    assert logits is not None and logits.shape == (3, 256, 256) and clogits is None
    np.testing.assert_array_equal(cmasks, masks)
    np.testing.assert_array_equal(cscores, scores)


def test_a_session_model_from_before_compact_answers_is_asked_the_old_way(fake: Served) -> None:
    """A repository exported before compact answers refuses their tensors: the click is sent
    again the old way (logits back), and the client remembers it for the next clicks."""
    fake.behaviour.older_session = True
    with client_for(fake) as client, client_for(fake, compact_answers=False) as before:
        emb = client.embed(IMAGE)
        n = len(fake.behaviour.calls)
        first = client.predict(emb, CLICK)
        second = client.predict(emb, CLICK)
        sent = [[o.name for o in c.outputs] for c in fake.behaviour.calls[n:]]
        want = before.predict(emb, CLICK)
    assert (
        sent == [["iou_predictions", "prediction_id", "masks"]] + [["low_res_masks", "iou_predictions"]] * 2
    )
    for pred in (first, second):
        assert isinstance(pred, Prediction) and isinstance(want, Prediction)
        assert pred.prediction_id is None and pred.low_res_logits is not None
        np.testing.assert_array_equal(pred.masks, want.masks)


def test_a_kept_mask_the_server_lost_is_made_again_from_its_prompt(fake: Served) -> None:
    """Another replica took the session over (or the mask was dropped): the refinement's
    NOT_FOUND makes the named mask again from the prompt that made it, once, then the
    refinement is answered as if nothing had happened; a chain of refinements too."""
    first_click = Prompt([[120, 80]], [1])
    with client_for(fake) as client, client_for(fake, compact_answers=False) as before:
        emb = client.embed(IMAGE)
        first = client.predict(emb, first_click)
        second = client.predict(emb, Prompt([[120, 80], [30, 40]], [1, 0], mask_input=first.mask_input()))
        fake.behaviour.kept.clear()  # the server lost every kept mask
        n = len(fake.behaviour.calls)
        third = client.predict(emb, Prompt([[120, 80], [60, 70]], [1, 1], mask_input=second.mask_input()))
        sent = [decode_request(c) for c in fake.behaviour.calls[n:]]
        # the same chain with the logits uploaded each time
        want1 = before.predict(emb, first_click)
        want2 = before.predict(emb, Prompt([[120, 80], [30, 40]], [1, 0], mask_input=want1.mask_input()))
        want3 = before.predict(emb, Prompt([[120, 80], [60, 70]], [1, 1], mask_input=want2.mask_input()))
    # refine (lost) -> remake 2nd (lost its own) -> remake 1st -> 2nd again -> 3rd again
    assert ["refine_from" in inputs for inputs in sent] == [True, True, False, True, True]
    assert all("mask_input" not in inputs for inputs in sent)  # no logits went up
    assert isinstance(third, Prediction) and isinstance(want3, Prediction)
    np.testing.assert_array_equal(third.masks, want3.masks)
    np.testing.assert_array_equal(third.scores, want3.scores)

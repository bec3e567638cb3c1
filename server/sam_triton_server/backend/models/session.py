"""``sam_session``: server-held embeddings, so an interactive click uploads prompts only.

One request does one of three things, chosen by which inputs it carries (all but
``session_id`` are optional in the config):

- ``image`` + ``input_size``: encode through ``sam_encoder`` (a BLS call, so encoder requests
  from sessions and from plain clients batch together) and keep the embedding under
  ``session_id``. Ids starting with ``sha256:`` name the image's content, so an image that is
  already cached is not encoded again.
- decoder prompts (``point_coords`` ...): run the decoder on the cached embedding, in this
  process: a click pays one Python-backend hop, not two. ``mask_input`` and
  ``has_mask_input`` may be left out when no prompt carries a mask (zeros are implied), so a
  point click uploads a few hundred bytes instead of a 256 KiB empty mask. Prompts without a
  mask run the ``prompt_decoder`` graph on image features computed once at embed time
  (``image_features``; ~0.58x of the full decoder's time for a vit_b click); a request with
  a mask runs the full decoder.
- neither: a lookup; answers ``cache_hit`` so a client can skip uploading an image the server
  already holds.

``cache_hit`` (BOOL [1]) and ``image_embeddings`` can be requested as outputs of any of them.
A click may ask for compact answers: ``masks`` (made here at the caller's ``original_size`` and
encoded by ``sam_triton_common.mask_codec``, so only the masks travel, not 256 KiB of logits per
mask) and ``prediction_id`` (each prompt's logits kept in a byte-bounded
:class:`~sam_triton_server.backend.prediction_store.PredictionStore`, so a later click's
``refine_from``/``refine_mask`` names a mask instead of uploading it).
A miss on a prompt request is a NOT_FOUND error whose message starts with
"embedding not found"; the SDK answers it by re-embedding when it still holds the image.

The cache lives in this model instance's memory, so the config has exactly one instance;
several Triton replicas scale by routing a session's requests to the replica that embedded
it (hash the session id at the load balancer), see docs/operating/scaling.md.

Many users at once: ``execute`` only dispatches, so Triton hands this instance each request
the moment it arrives (the config has no dynamic batcher: its 500 ms polling stalled
back-to-back clicks, see :mod:`~sam_triton_server.backend.click_lane`). Clicks and lookups run on the
:class:`~sam_triton_server.backend.click_lane.ClickLane`, one at a time in arrival order; requests that
need an encode go to a small :class:`~sam_triton_server.backend.embed_pool.EmbedPool` (BLS and
onnxruntime release the GIL), so a click never waits for an encode. Both answer through the
requests' response senders. A request for a session whose encode is in flight waits for that
encode instead of encoding again (or missing). Both backlogs are bounded (``click_queue_size``,
``embed_queue_size``): beyond them a request is refused at once with UNAVAILABLE and a message
starting "sam_session overloaded", which the SDK raises as ServerOverloadedError; so is an embed
whose caller's deadline (the request's KServe ``timeout``) is nearer than the time the encodes
ahead of it are expected to take. A request whose deadline passed while it waited is dropped
undone ("request timeout expired"), and an encode's time left travels on as the BLS request's
timeout.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
from sam_triton_common.contract import (
    CACHE_HIT,
    CONTENT_ID_PREFIX,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    EMBEDDING_NOT_FOUND,
    EMBEDDING_SHAPE,
    ENCODED_IMAGE,
    ENCODER_MODEL,
    IMAGE,
    IMAGE_EMBEDDINGS,
    INPUT_SIZE,
    IOU_PREDICTIONS,
    LOW_RES_MASKS,
    LOW_RES_SIZE,
    MASKS,
    MAX_MASK_PIXELS,
    MAX_SESSION_ID_BYTES,
    ORIGINAL_SIZE,
    PREDICTION_ID,
    REFINE_FROM,
    REFINE_MASK,
    SESSION_ID,
)
from sam_triton_common.images import DEFAULT_MAX_PIXELS
from sam_triton_common.mask_codec import encode_prediction
from sam_triton_common.transforms import SQUARE_INPUT, prepare_image, preprocess_shape

from sam_triton_server.backend.click_lane import ClickLane, LaneFull
from sam_triton_server.backend.embed_pool import EmbedPool, PoolFull
from sam_triton_server.backend.embedding_cache import CachedEmbedding, EmbeddingCache
from sam_triton_server.backend.metrics import SessionMetrics
from sam_triton_server.backend.models._common import (
    Array,
    DeadlinePassed,
    InvalidInput,
    NotFound,
    OnnxModelBase,
    Unavailable,
    int_parameter,
)
from sam_triton_server.backend.models.decoder import validate_decoder_inputs
from sam_triton_server.backend.models.encoder import validate_encoder_inputs
from sam_triton_server.backend.ort import Session
from sam_triton_server.backend.prediction_store import PredictionNotFound, PredictionStore
from sam_triton_server.backend.prompt_decoder import PromptDecoder
from sam_triton_server.backend.uploads import decode_upload

UPLOADS = (IMAGE, ENCODED_IMAGE)  # what an embed carries: the pixels, or a file of them
PROMPT_INPUTS = DECODER_INPUTS[1:]  # everything the decoder takes except the embedding
CLICK_EXTRAS = (ORIGINAL_SIZE, REFINE_FROM, REFINE_MASK)  # what a compact click adds to the prompts
OVERLOADED_PREFIX = "sam_session overloaded"
WAITED_S = 0.002
"""A request that reached its worker later than this after arriving waited for its turn."""


class EmbeddingNotFound(NotFound):
    pass


class TritonPythonModel(OnnxModelBase):
    """Runs sam_decoder's graphs (the config's file parameters point at them): the full
    decoder for prompts with a mask, the split pair for the rest."""

    GRAPHS = {
        "full_decoder": "onnx_file",
        "image_features": "image_features_file",
        "prompt_graph": "prompt_decoder_file",
    }
    full_decoder: Session
    image_features: Session
    prompt_graph: Session

    def setup(self) -> None:
        self.prompt_decoder = PromptDecoder(self.image_features, self.prompt_graph)
        self.max_prompts = int_parameter(self.params, "max_prompts", 64)
        self.max_points = int_parameter(self.params, "max_points", 64)
        self.encoder_model = self.params.get("encoder_model", ENCODER_MODEL)
        self.max_image_pixels = int_parameter(self.params, "max_image_pixels", DEFAULT_MAX_PIXELS)
        self.cache = EmbeddingCache(
            max_bytes=int_parameter(self.params, "cache_bytes", 1 << 30),
            ttl_seconds=float(int_parameter(self.params, "cache_ttl_seconds", 3600)),
        )
        self.metrics = SessionMetrics(self.pb, self.name)
        self.pool = EmbedPool(
            workers=int_parameter(self.params, "embed_workers", 2),
            max_pending=int_parameter(self.params, "embed_queue_size", 16),
            on_pending=self.metrics.embed_pending,
        )
        self.clicks = ClickLane(max_pending=int_parameter(self.params, "click_queue_size", 64))
        self.predictions = PredictionStore(int_parameter(self.params, "prediction_cache_bytes", 64 << 20))
        self._warm_up()

    def _warm_up(self) -> None:
        """One run of each graph at load, so the first user click does not pay the first-run cost."""
        embedding = np.zeros(EMBEDDING_SHAPE, np.float32)
        prompt = {
            "point_coords": np.zeros((1, 1, 2, 2), np.float32),
            "point_labels": np.array([[[1, -1]]], np.float32),
            "multimask_output": np.ones((1, 1), np.bool_),
        }
        self.prompt_decoder.run(self.prompt_decoder.image_features(embedding), **prompt)
        self._run_full_decoder(
            embedding,
            {
                **prompt,
                "mask_input": np.zeros((1, 1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32),
                "has_mask_input": np.zeros((1, 1), np.float32),
            },
        )

    def execute(self, requests: list[Any]) -> None:
        """Hands every request to the click lane or the embed pool, which answer it through its
        response sender; nothing here waits for a decode or an encode."""
        for request in requests:
            arrived = time.monotonic()
            try:
                session_id = self._session_id(request)
                self._check_input_pairs(request)
                if self._needs_encode(request, session_id):
                    timeout_us = int(request.timeout())  # the caller's deadline; 0: none
                    job = partial(self._embed_job, request, session_id, arrived)
                    self.pool.submit(session_id, job, timeout_us / 1e6 if timeout_us else None)
                else:
                    answer = partial(self._answer, request, session_id, arrived)
                    if not self.pool.follow(session_id, answer):
                        self.clicks.submit(answer)
            except (PoolFull, LaneFull) as e:
                self._send(request, self.error_for(Unavailable(f"{OVERLOADED_PREFIX}: {e}; retry later")))
            except Exception as e:  # an unreadable session id or request; never take the server down
                self._send(request, self.error_for(e))
        return None

    def finalize(self) -> None:
        self.clicks.shutdown()
        self.pool.shutdown()
        super().finalize()

    def _needs_encode(self, request: Any, session_id: str) -> bool:
        """An image to encode: always for a caller-named id (it is rebound), for a content id
        only when the cache lacks it (one in flight is joined by the pool)."""
        if not any(self.pb.get_input_tensor_by_name(request, name) is not None for name in UPLOADS):
            return False
        if not session_id.startswith(CONTENT_ID_PREFIX):
            return True
        return self.pool.in_flight(session_id) or not self.cache.holds(session_id)

    # Each request looks its session up in the cache once (a hit or a miss in the metrics) and
    # keeps that entry: an eviction in between cannot turn its own click into a miss.

    def _embed_job(self, request: Any, session_id: str, arrived: float) -> None:
        """On a pool worker: encode (unless the deadline passed or a joined encode filled the
        cache), then answer the rest of the request."""
        try:
            entry = self.cache.get(session_id)
            hit = entry is not None
            if entry is None or not session_id.startswith(CONTENT_ID_PREFIX):
                entry = self._embed(session_id, request, arrived)
            response = self._handle(request, session_id, entry, hit)
            self.metrics.embedded(time.monotonic() - arrived)
        except Exception as e:
            response = self.error_for(e)
        self._send(request, response)

    def _answer(self, request: Any, session_id: str, arrived: float) -> None:
        """On the click lane (or after the encode it followed): decode, or look up."""
        # A click that waited for its turn may have been abandoned meanwhile (LatestClick
        # cancels a superseded one): skip its decode. Asked only then: the check is an IPC.
        if time.monotonic() - arrived > WAITED_S and request.is_cancelled():
            cancelled = self._error(f"{self.name}: cancelled by the caller while it waited", "CANCELLED")
            self._send(request, cancelled)
            return
        try:
            self._time_left_us(request, arrived, "answer")
            entry = self.cache.get(session_id)
            response = self._handle(request, session_id, entry, entry is not None)
            if self._is_click(request):
                self.metrics.clicked(time.monotonic() - arrived)
        except Exception as e:
            response = self.error_for(e)
        self._send(request, response)

    def _send(self, request: Any, response: Any) -> None:
        self.metrics.publish_cache(self.cache)  # before the answer: a client that then scrapes sees it
        request.get_response_sender().send(response, flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _is_click(self, request: Any) -> bool:
        return self.pb.get_input_tensor_by_name(request, "point_coords") is not None

    def _handle(self, request: Any, session_id: str, entry: CachedEmbedding | None, hit: bool) -> Any:
        """Decode and collect the outputs; any encode has already happened."""
        wanted = set(request.requested_output_names())
        outputs: dict[str, Array] = {}
        if self._is_click(request):
            held = self._held(entry, session_id)
            outputs.update(self._decode(held, request))
            low = outputs[LOW_RES_MASKS]
            if MASKS in wanted:  # before anything is kept: a refused request holds nothing
                outputs[MASKS] = self._compact_masks(request, held, low)
            if PREDICTION_ID in wanted:
                ids = [self.predictions.keep(session_id, held, prompts) for prompts in low]
                outputs[PREDICTION_ID] = np.array(
                    [[i.encode() for i in row] for row in ids], dtype=np.object_
                )
        if IMAGE_EMBEDDINGS in wanted:
            outputs[IMAGE_EMBEDDINGS] = self._held(entry, session_id).embedding[None]
        outputs[CACHE_HIT] = np.array([[hit]], dtype=np.bool_)
        return self.respond({name: value for name, value in outputs.items() if name in wanted})

    def _held(self, entry: CachedEmbedding | None, session_id: str) -> CachedEmbedding:
        if entry is None:
            raise EmbeddingNotFound(self._miss_message(session_id))
        return entry

    def _session_id(self, request: Any) -> str:
        raw = self.input(request, SESSION_ID).reshape(-1)
        if raw.size != 1:
            raise InvalidInput(f"session_id must hold exactly one id, got {raw.size}")
        value = raw[0]
        try:
            # Strict: replacing undecodable bytes would map distinct ids onto one cache key.
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise InvalidInput("session_id must be UTF-8 text") from None
        if not text or len(text.encode()) > MAX_SESSION_ID_BYTES:
            raise InvalidInput(f"session_id must be 1..{MAX_SESSION_ID_BYTES} bytes")
        return text

    def _check_input_pairs(self, request: Any) -> None:
        """Inputs that mean nothing without their partner are refused, not silently ignored
        (the request would otherwise be answered as a plain lookup)."""
        has = {
            name
            for name in (*UPLOADS, INPUT_SIZE, *PROMPT_INPUTS, *CLICK_EXTRAS)
            if self.pb.get_input_tensor_by_name(request, name) is not None
        }
        if ENCODED_IMAGE in has and has.intersection((IMAGE, INPUT_SIZE)):
            raise InvalidInput(f"{ENCODED_IMAGE} replaces {IMAGE} and {INPUT_SIZE}: send one or the other")
        if INPUT_SIZE in has and IMAGE not in has:
            raise InvalidInput(f"{INPUT_SIZE} given without {IMAGE}")
        prompt_parts = sorted(has.intersection((*PROMPT_INPUTS[1:], *CLICK_EXTRAS)))
        if prompt_parts and "point_coords" not in has:
            raise InvalidInput(f"{prompt_parts} given without point_coords")
        if (REFINE_FROM in has) != (REFINE_MASK in has):
            raise InvalidInput(f"{REFINE_FROM} and {REFINE_MASK} go together")

    def _uploaded_rgb(self, request: Any, session_id: str) -> Array | None:
        """The pixels of an ``encoded_image`` upload (decoded here, on an embed worker), or None."""
        encoded = self.pb.get_input_tensor_by_name(request, ENCODED_IMAGE)
        if encoded is None:
            return None
        return decode_upload(encoded.as_numpy(), session_id, self.max_image_pixels)

    def _embed(self, session_id: str, request: Any, arrived: float) -> CachedEmbedding:
        rgb = self._uploaded_rgb(request, session_id)
        if rgb is None:
            image, input_size = self.input(request, IMAGE), self.input(request, INPUT_SIZE)
        else:  # the SDK's own preprocessing, as for a raw upload
            padded, size = prepare_image(rgb)
            image, input_size = padded[None], np.array([size], dtype=np.int32)
        validate_encoder_inputs(image, input_size)
        if image.shape[0] != 1:
            raise InvalidInput("sam_session embeds one image per request")
        left_us = self._time_left_us(request, arrived, "encode")
        embedding = self.encode_via_bls(
            self.encoder_model, image, input_size, timeout_us=left_us, on_duration=self.pool.record_encode
        )[0]
        height, width = (int(v) for v in input_size[0])
        features = self.prompt_decoder.image_features(embedding)
        entry = self.cache.put(session_id, embedding, (height, width), features)
        if entry is None:
            raise RuntimeError("the embedding cache is smaller than one embedding; raise cache_bytes")
        return entry

    def _time_left_us(self, request: Any, arrived: float, work: str) -> int:
        """Microseconds left of the caller's deadline (the request's KServe ``timeout``; 0: none).
        DeadlinePassed when it passed before ``work`` started: the work is dropped, not done."""
        timeout_us = int(request.timeout())
        if not timeout_us:
            return 0
        left_us = timeout_us - int((time.monotonic() - arrived) * 1e6)
        if left_us <= 0:
            raise DeadlinePassed(
                f"request timeout expired: the caller's deadline ({timeout_us} us) passed before "
                f"the {work} started (clicks waiting: {self.clicks.pending}, embeds: {self.pool.pending})"
            )
        return left_us

    def _prompt_arrays(self, request: Any, entry: CachedEmbedding) -> dict[str, Array]:
        """The decoder's prompt inputs; an absent mask_input means "no mask" for every prompt
        (a read-only zero view: the prompt decoder never reads it); prompts that name a kept
        prediction (``refine_from``) get its logits as their mask."""
        arrays = {}
        for name in PROMPT_INPUTS:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            if tensor is not None:
                arrays[name] = tensor.as_numpy()
        if "mask_input" not in arrays:
            coords = self.input(request, "point_coords")
            has_mask = arrays.get("has_mask_input")
            if has_mask is not None and np.any(has_mask != 0):
                raise InvalidInput("has_mask_input is set but mask_input is missing")
            if coords.ndim != 4:
                raise InvalidInput(f"point_coords has shape {list(coords.shape)}, expected [1, P, N, 2]")
            batch, prompts = coords.shape[:2]
            no_mask = (batch, prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE)
            arrays["mask_input"] = np.broadcast_to(np.float32(0), no_mask)
            if has_mask is None:
                arrays["has_mask_input"] = np.zeros((batch, prompts), np.float32)
        missing = [name for name in PROMPT_INPUTS if name not in arrays]
        if missing:
            raise InvalidInput(f"missing input tensor {missing[0]!r}")
        if self.pb.get_input_tensor_by_name(request, REFINE_FROM) is not None:
            self._refine(request, entry, arrays)
        return arrays

    def _refine(self, request: Any, entry: CachedEmbedding, arrays: dict[str, Array]) -> None:
        """Puts the kept logits that ``refine_from``/``refine_mask`` name into the prompts' masks."""
        names, indices = self.input(request, REFINE_FROM), self.input(request, REFINE_MASK)
        shape = arrays["point_coords"].shape[:2]
        if names.shape != shape or indices.shape != shape:
            raise InvalidInput(
                f"{REFINE_FROM} {list(names.shape)} and {REFINE_MASK} {list(indices.shape)} must be "
                f"{list(shape)}: one per prompt"
            )
        session_id = self._session_id(request)
        mask = np.array(arrays["mask_input"], dtype=np.float32)  # a writable copy
        has_mask = np.array(arrays["has_mask_input"], dtype=np.float32)
        for (b, p), name in np.ndenumerate(names):
            text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            if not text:
                continue
            try:
                mask[b, p, 0] = self.predictions.mask(session_id, entry, text, int(indices[b, p]))
            except PredictionNotFound as e:
                raise NotFound(str(e)) from None
            except IndexError as e:
                raise InvalidInput(str(e)) from None
            has_mask[b, p] = 1.0
        arrays["mask_input"], arrays["has_mask_input"] = mask, has_mask

    def _compact_masks(self, request: Any, entry: CachedEmbedding, low: Array) -> Array:
        """BYTES [B, P, M]: each mask at the caller's ``original_size``, encoded compactly;
        the same bits as the SDK's own postprocessing of the logits (the same code makes them)."""
        tensor = self.pb.get_input_tensor_by_name(request, ORIGINAL_SIZE)
        if tensor is None:
            raise InvalidInput(f"{MASKS} requested without {ORIGINAL_SIZE}: the masks' size is needed")
        height, width = (int(v) for v in tensor.as_numpy().reshape(2))  # INT32 [1, 2] (the config)
        if height <= 0 or width <= 0 or height * width > MAX_MASK_PIXELS:
            raise InvalidInput(
                f"{ORIGINAL_SIZE} {height}x{width}: expected positive sides, at most {MAX_MASK_PIXELS} pixels"
            )
        if entry.input_size != SQUARE_INPUT and preprocess_shape(height, width) != entry.input_size:
            raise InvalidInput(
                f"{ORIGINAL_SIZE} {height}x{width} is not the embedded image's size (it was resized to "
                f"{entry.input_size[0]}x{entry.input_size[1]}, which {height}x{width} is not)"
            )
        out = np.empty(low.shape[:3], dtype=np.object_)
        for b, p in np.ndindex(*low.shape[:2]):  # one prompt's full-size masks at a time
            out[b, p] = encode_prediction(low[b, p], entry.input_size, (height, width))
        return out

    def _decode(self, entry: CachedEmbedding, request: Any) -> dict[str, Array]:
        arrays = self._prompt_arrays(request, entry)
        arrays[IMAGE_EMBEDDINGS] = entry.embedding[None]
        validate_decoder_inputs(
            arrays, max_prompts=self.max_prompts, max_points=self.max_points, embedding_is_trusted=True
        )
        if not np.any(arrays["has_mask_input"]):
            masks, scores = self.prompt_decoder.run(
                entry.features,
                arrays["point_coords"],
                arrays["point_labels"],
                arrays["multimask_output"],
            )
            return {LOW_RES_MASKS: masks, IOU_PREDICTIONS: scores}
        return self._run_full_decoder(entry.embedding, arrays)

    def _run_full_decoder(self, embedding: Array, arrays: dict[str, Array]) -> dict[str, Array]:
        feed = {name: arrays[name] for name in PROMPT_INPUTS}
        feed["mask_input"] = np.ascontiguousarray(feed["mask_input"])
        feed[IMAGE_EMBEDDINGS] = embedding[None]
        masks, scores = self.full_decoder.run(list(DECODER_OUTPUTS), feed)
        return {LOW_RES_MASKS: masks, IOU_PREDICTIONS: scores}

    def _miss_message(self, session_id: str) -> str:
        return (
            f"{EMBEDDING_NOT_FOUND} for session {session_id!r}: never embedded here, evicted, or expired "
            f"(cache holds {len(self.cache)} embeddings, {self.cache.nbytes >> 20} MiB); "
            "embed the image again"
        )

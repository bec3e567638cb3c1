"""SamClient / AsyncSamClient against an in-process fake GRPCInferenceService.

The fake speaks the same KServe v2 protocol as Triton (generated from our proto) with a toy
"model", so transport behaviour - request encoding, retries, deadlines, TLS/mTLS, compression,
size limits, error mapping, sync/async equivalence - is tested fast and deterministically.
End-to-end fidelity against a real tritonserver is in test_predictor_e2e.py. The fake also
speaks ``sam_session`` (server-held embeddings); the session protocol is tested in
test_session_sdk.py, and the tests here pin the stateless path (``fast`` turns sessions off).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sam_triton import (
    AsyncSamClient,
    DeadlineExceededError,
    ImageEmbedding,
    InvalidInputError,
    ModelNotFoundError,
    Prompt,
    ResourceExhaustedError,
    SamClient,
    SamTritonError,
    ServerError,
    ServerUnavailableError,
    TlsConfig,
)
from sam_triton._tensors import build_infer_request, decode_infer_response
from sam_triton.proto import inference_pb2 as pb
from sam_triton.proto import inference_pb2_grpc as pb_grpc
from sam_triton.transforms import postprocess_masks, prepare_image, preprocess_shape
from sam_triton_common.images import decode_image
from sam_triton_common.mask_codec import encode_prediction

# ----------------------------------------------------------------------------- the fake server


def toy_decoder(embedding: np.ndarray, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Deterministic stand-in for sam_decoder: a disc around each prompt's first point."""
    coords = inputs["point_coords"][0]  # (P, N, 2)
    multimask = bool(inputs["multimask_output"].reshape(-1)[0])
    k = 3 if multimask else 1
    p = coords.shape[0]
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    low = np.zeros((1, p, k, 256, 256), np.float32)
    iou = np.zeros((1, p, k), np.float32)
    base = float(embedding.mean())
    for i in range(p):
        cx, cy = (coords[i, 0] / 4.0) if coords.shape[1] else (128.0, 128.0)
        for j in range(k):
            low[0, i, j] = 10.0 + base - np.hypot(xx - cx, yy - cy) / (j + 1)
            iou[0, i, j] = 0.5 + 0.1 * j + 0.01 * i + base
        low[0, i] += inputs["has_mask_input"][0, i] * inputs["mask_input"][0, i, 0].mean()
    return {"low_res_masks": low, "iou_predictions": iou}


def as_pixels(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An upload's inputs with a file (``encoded_image``) decoded and prepared as sam_session does."""
    if "encoded_image" not in inputs:
        return inputs
    padded, size = prepare_image(decode_image(bytes(inputs["encoded_image"].reshape(-1)[0])))
    return {**inputs, "image": padded[None], "input_size": np.array([size], np.int32)}


def toy_encoder(inputs: dict[str, np.ndarray]) -> np.ndarray:
    h, w = (int(v) for v in inputs["input_size"][0])
    value = inputs["image"][0, :h, :w].astype(np.float32).mean() / 255.0
    return np.full((1, 256, 64, 64), value, np.float32)


@dataclass
class FakeBehaviour:
    unavailable_first: int = 0  # fail this many calls with UNAVAILABLE first
    abort: tuple[grpc.StatusCode, str] | None = None
    sleep: float = 0.0
    typed_outputs: bool = False
    calls: list[pb.ModelInferRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    session_model: bool = True  # serve the toy sam_session
    sessions: dict[str, np.ndarray] = field(default_factory=dict)  # its cache: id -> embedding
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # prediction id -> kept (M, 256, 256) logits
    older_session: bool = False  # a sam_session exported before compact answers


class FakeTriton(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, behaviour: FakeBehaviour) -> None:
        self.b = behaviour

    def _gate(self, context: grpc.ServicerContext) -> None:
        with self.b.lock:
            self.b.metadata.append(dict(context.invocation_metadata()))
            if self.b.unavailable_first > 0:
                self.b.unavailable_first -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        if self.b.abort is not None:
            context.abort(*self.b.abort)
        if self.b.sleep:
            time.sleep(self.b.sleep)

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        self._gate(context)
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        self._gate(context)
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        self._gate(context)
        names = ("sam_encoder", "sam_decoder", "sam") + (("sam_session",) if self.b.session_model else ())
        return pb.ModelReadyResponse(ready=request.name in names)

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        # The SDK asks the encoder's metadata once per client, to learn the model family: kept
        # out of the fault injection and the header log, which the tests aim at inference calls.
        if request.name not in ("sam_encoder", "sam_decoder", "sam", "sam_session"):
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found"
            )
        out = pb.ModelMetadataResponse(name=request.name, versions=["1"], platform="python")
        out.inputs.add(name="image", datatype="UINT8", shape=[-1, 1024, 1024, 3])
        if request.name == "sam_encoder":  # a SAM 1 encoder: the SDK learns the family from this
            out.outputs.add(name="image_embeddings", datatype="FP32", shape=[-1, 256, 64, 64])
        return out

    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        self._gate(context)
        with self.b.lock:
            self.b.calls.append(request)
        inputs = decode_request(request)
        if request.model_name == "sam_encoder":
            outputs = {"image_embeddings": toy_encoder(inputs)}
        elif request.model_name == "sam_decoder":
            outputs = toy_decoder(inputs["image_embeddings"], inputs)
        elif request.model_name == "sam":
            outputs = toy_decoder(toy_encoder(inputs), inputs)
        elif request.model_name == "sam_session" and self.b.session_model:
            outputs = self._session(request, inputs, context)
        else:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.model_name}' is not found"
            )
        return encode_response(request.model_name, outputs, typed=self.b.typed_outputs)

    def _session(
        self, request: pb.ModelInferRequest, inputs: dict[str, np.ndarray], context: grpc.ServicerContext
    ) -> dict[str, np.ndarray]:
        """Toy sam_session: the same three request kinds and errors as the real model."""
        (raw,) = inputs["session_id"].reshape(-1)
        session_id = raw.decode()
        if not session_id or len(raw) > 256:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sam_session: session_id must be 1..256 bytes")
        with self.b.lock:
            hit = session_id in self.b.sessions
        inputs = as_pixels(inputs)
        if "image" in inputs and not (hit and session_id.startswith("sha256:")):
            with self.b.lock:
                self.b.sessions[session_id] = toy_encoder(inputs)
        with self.b.lock:
            embedding = self.b.sessions.get(session_id)
        wanted = {o.name for o in request.outputs}
        if self.b.older_session and "original_size" in inputs:  # Triton's own check, word for word
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "[request id: <id_unknown>] unexpected inference input 'original_size' "
                "for model 'sam_session'",
            )
        outputs: dict[str, np.ndarray] = {"cache_hit": np.array([[hit]])}
        if "point_coords" in inputs or "image_embeddings" in wanted:
            if embedding is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"embedding not found for session {session_id!r}")
            outputs["image_embeddings"] = embedding
        if "point_coords" in inputs:
            if "mask_input" not in inputs:  # optional here: no prompt carries a mask
                p = inputs["point_coords"].shape[1]
                inputs = {
                    **inputs,
                    "mask_input": np.zeros((1, p, 1, 256, 256), np.float32),
                    "has_mask_input": np.zeros((1, p), np.float32),
                }
            inputs = {k: np.array(v) for k, v in inputs.items()}  # writable: refinements fill masks in
            for p, kept in enumerate(inputs.get("refine_from", np.zeros((1, 0), object))[0]):
                if kept:
                    if kept.decode() not in self.b.kept:
                        message = f"prediction not found: {kept!r} is not held here"
                        context.abort(grpc.StatusCode.NOT_FOUND, message)
                    inputs["mask_input"][0, p, 0] = self.b.kept[kept.decode()][inputs["refine_mask"][0, p]]
                    inputs["has_mask_input"][0, p] = 1.0
            outputs.update(toy_decoder(embedding, inputs))
            self._compact(inputs, outputs)
        return {k: v for k, v in outputs.items() if k in wanted}

    def _compact(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """The compact answers: masks made and encoded the way sam_session does, kept logits."""
        low = outputs["low_res_masks"][0]
        ids = [f"kept-{len(self.b.kept) + p}" for p in range(low.shape[0])]
        self.b.kept.update(zip(ids, low, strict=True))
        outputs["prediction_id"] = np.array([[i.encode() for i in ids]], dtype=np.object_)
        if "original_size" in inputs:
            size = tuple(int(v) for v in inputs["original_size"][0])
            masks = [encode_prediction(m, preprocess_shape(*size), size) for m in low]
            outputs["masks"] = np.array([masks], dtype=np.object_)


def decode_request(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    # A request is decoded exactly like a response: same tensor layout, raw contents.
    resp = pb.ModelInferResponse()
    for t in request.inputs:
        resp.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
    resp.raw_output_contents.extend(request.raw_input_contents)
    return decode_infer_response(resp)


def encode_response(model: str, outputs: dict[str, np.ndarray], typed: bool = False) -> pb.ModelInferResponse:
    req = build_infer_request(model, outputs)
    resp = pb.ModelInferResponse(model_name=model)
    for t, raw in zip(req.inputs, req.raw_input_contents, strict=True):
        out = resp.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        if typed:
            out.contents.fp32_contents.extend(np.frombuffer(raw, np.float32).tolist())
    if not typed:
        resp.raw_output_contents.extend(req.raw_input_contents)
    return resp


@dataclass
class Served:
    url: str
    behaviour: FakeBehaviour
    server: grpc.Server


def serve(credentials: grpc.ServerCredentials | None = None) -> Served:
    behaviour = FakeBehaviour()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FakeTriton(behaviour), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return Served(f"127.0.0.1:{port}", behaviour, server)


@pytest.fixture
def fake() -> Iterator[Served]:
    served = serve()
    yield served
    served.server.stop(None)


def fast(url: str, **kw: Any) -> SamClient:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("server_embeddings", False)  # these tests pin the stateless request layout
    return SamClient(url, **kw)


IMAGE = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)

# ----------------------------------------------------------------------------- encoding


def test_tensor_round_trip_all_dtypes() -> None:
    arrays = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f16": np.arange(4, dtype=np.float16),
        "f64": np.array([1.5]),
        "i32": np.array([[1, -2]], np.int32),
        "i64": np.array([2**40], np.int64),
        "u8": np.array([255, 0], np.uint8),
        "b": np.array([[True, False]]),
        "s": np.array([b"ab", b"", b"\x00c"], dtype=object),
    }
    req = build_infer_request("m", arrays, ["o"], model_version="2", request_id="r1")
    assert req.model_version == "2" and req.id == "r1" and req.outputs[0].name == "o"
    assert [t.datatype for t in req.inputs] == [
        "FP32",
        "FP16",
        "FP64",
        "INT32",
        "INT64",
        "UINT8",
        "BOOL",
        "BYTES",
    ]
    back = decode_request(req)
    for name, arr in arrays.items():
        assert back[name].shape == arr.shape
        assert back[name].tolist() == arr.tolist()


def test_decode_rejects_wrong_byte_count() -> None:
    resp = pb.ModelInferResponse()
    resp.outputs.add(name="x", datatype="FP32", shape=[2])
    resp.raw_output_contents.append(b"\x00" * 7)
    with pytest.raises(ServerError, match="7 bytes"):
        decode_infer_response(resp)


def test_embed_request_layout(fake: Served) -> None:
    with fast(fake.url) as client:
        emb = client.embed(IMAGE)
    (req,) = fake.behaviour.calls
    assert req.model_name == "sam_encoder"
    shapes = {t.name: (t.datatype, list(t.shape)) for t in req.inputs}
    assert shapes == {"image": ("UINT8", [1, 1024, 1024, 3]), "input_size": ("INT32", [1, 2])}
    assert [o.name for o in req.outputs] == ["image_embeddings"]
    inputs = decode_request(req)
    assert inputs["input_size"].tolist() == [[614, 1024]]
    assert emb.embedding is not None and emb.embedding.shape == (256, 64, 64)
    assert emb.embedding.dtype == np.float32
    assert emb.original_size == (300, 500) and emb.input_size == (614, 1024)
    assert emb.session_id is None


def test_predict_groups_prompts_by_point_count(fake: Served) -> None:
    prompts = [
        Prompt([[100, 100]], [1]),
        Prompt([[200, 150], [10, 10]], [1, 0]),
        Prompt(box=[10, 10, 300, 200]),
        Prompt([[400, 250]], [1]),
    ]
    with fast(fake.url) as client:
        emb = client.embed(IMAGE)
        preds = client.predict(emb, prompts)
        single = client.predict(emb, prompts[3], multimask_output=False, return_logits=True)
    assert isinstance(preds, list) and len(preds) == 4
    decoder_calls = [c for c in fake.behaviour.calls if c.model_name == "sam_decoder"]
    # N=2 group (points+pad, box corners, points+pad) in one request; the N=3 prompt alone.
    assert sorted(decode_request(c)["point_coords"].shape[1] for c in decoder_calls[:2]) == [1, 3]
    for prompt, pred in zip(prompts, preds, strict=True):
        assert pred.masks.shape == (3, 300, 500) and pred.masks.dtype == np.bool_
        assert pred.scores.shape == (3,) and pred.low_res_logits.shape == (3, 256, 256)
        # the toy disc is centred on the prompt's first point
        x, y = prompt.point_coords[0] if prompt.point_coords is not None else prompt.box[:2]  # type: ignore[index]
        assert pred.masks[2, int(y), int(x)]
    assert not isinstance(single, list)
    assert single.masks.dtype == np.float32 and single.masks.shape == (1, 300, 500)
    np.testing.assert_allclose(
        single.masks, postprocess_masks(single.low_res_logits, preprocess_shape(300, 500), (300, 500))
    )
    # the last request carried the multimask switch off
    last = decode_request(fake.behaviour.calls[-1])
    assert last["multimask_output"].tolist() == [[False]]


def test_segment_uses_ensemble_once(fake: Served) -> None:
    with fast(fake.url) as client:
        pred = client.segment(IMAGE, Prompt([[100, 100]], [1]))
        assert [c.model_name for c in fake.behaviour.calls] == ["sam"]
        emb = client.embed(IMAGE)
        ref = client.predict(emb, Prompt([[100, 100]], [1]))
        # mixed point counts: embed once, decode each group
        client.segment(
            IMAGE, [Prompt([[1, 1]], [1]), Prompt(box=[0, 0, 5, 5]), Prompt([[1, 1], [2, 2]], [1, 1])]
        )
    assert not isinstance(pred, list) and not isinstance(ref, list)
    np.testing.assert_array_equal(pred.masks, ref.masks)
    assert [c.model_name for c in fake.behaviour.calls[3:]] == ["sam_encoder", "sam_decoder", "sam_decoder"]


def test_typed_output_contents(fake: Served) -> None:
    fake.behaviour.typed_outputs = True
    with fast(fake.url) as client:
        emb = client.embed(IMAGE)
    assert emb.embedding is not None and emb.embedding.shape == (256, 64, 64)


def test_health_and_metadata(fake: Served) -> None:
    with fast(fake.url, metadata={"authorization": "Bearer t"}) as client:
        assert client.server_live() and client.server_ready()
        assert client.model_ready("sam_encoder") and not client.model_ready("nope")
        meta = client.model_metadata("sam_encoder")
        client.wait_until_ready(timeout=5)
    assert meta.name == "sam_encoder" and meta.inputs[0].shape == (-1, 1024, 1024, 3)
    assert fake.behaviour.metadata[0]["authorization"] == "Bearer t"


# ----------------------------------------------------------------------------- errors and robustness


def test_invalid_input_never_reaches_the_server(fake: Served) -> None:
    with fast(fake.url) as client:
        emb = client.embed(IMAGE)
        n = len(fake.behaviour.calls)
        with pytest.raises(InvalidInputError, match="outside"):
            client.predict(emb, Prompt([[600, 10]], [1]))
        with pytest.raises(InvalidInputError, match="dtype"):
            client.embed(IMAGE.astype(np.float32))
        with pytest.raises(InvalidInputError, match="non-empty list"):
            client.predict(emb, [])
        with pytest.raises(InvalidInputError, match="embedding has shape"):
            client.predict(
                ImageEmbedding(np.zeros((3, 3), np.float32), (300, 500), (614, 1024)), Prompt([[1, 1]], [1])
            )
        with pytest.raises(InvalidInputError, match="neither an embedding nor a session id"):
            client.predict(ImageEmbedding(None, (300, 500), (614, 1024)), Prompt([[1, 1]], [1]))
        with pytest.raises(InvalidInputError, match="session_id"):
            client.predict(ImageEmbedding(None, (300, 500), (614, 1024), ""), Prompt([[1, 1]], [1]))
    assert len(fake.behaviour.calls) == n


def test_retry_on_unavailable_then_success(fake: Served) -> None:
    fake.behaviour.unavailable_first = 2
    with fast(fake.url, retries=3) as client:
        assert client.embed(IMAGE).embedding is not None


def test_retries_exhausted(fake: Served) -> None:
    fake.behaviour.unavailable_first = 10
    with fast(fake.url, retries=2) as client, pytest.raises(ServerUnavailableError) as info:
        client.server_live()
    assert info.value.code == "UNAVAILABLE"
    assert info.value.server_message == "warming up"
    assert "after 2 retries" in str(info.value)
    assert fake.behaviour.unavailable_first == 7  # 1 try + 2 retries


@pytest.mark.parametrize(
    ("status", "message", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "point_coords must be [P,N,2]", InvalidInputError),
        (grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'x' is not found", ModelNotFoundError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "too big", ResourceExhaustedError),
        (grpc.StatusCode.INTERNAL, "boom", ServerError),
    ],
)
def test_status_mapping_not_retried(fake: Served, status: grpc.StatusCode, message: str, cls: type) -> None:
    fake.behaviour.abort = (status, message)
    with fast(fake.url) as client, pytest.raises(cls) as info:
        client.embed(IMAGE)
    assert isinstance(info.value, SamTritonError)
    assert info.value.code == status.name and info.value.server_message == message
    assert message in str(info.value)
    assert len(fake.behaviour.metadata) == 1  # answered errors are not retried


def test_unknown_model(fake: Served) -> None:
    from sam_triton import ModelNames

    with fast(fake.url, models=ModelNames(encoder="nope")) as client, pytest.raises(ModelNotFoundError):
        client.embed(IMAGE)


def test_deadline(fake: Served) -> None:
    fake.behaviour.sleep = 1.0
    with fast(fake.url, timeout=0.2) as client, pytest.raises(DeadlineExceededError) as info:
        client.server_live()
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert isinstance(info.value, TimeoutError)


def test_server_down_fails_fast() -> None:
    from tests.helpers import free_ports

    (port,) = free_ports(1)
    start = time.monotonic()
    with fast(f"127.0.0.1:{port}", retries=2, timeout=10) as client, pytest.raises(ServerUnavailableError):
        client.server_live()
    assert time.monotonic() - start < 5


def test_message_size_limit_checked_locally(fake: Served) -> None:
    with (
        fast(fake.url, max_message_bytes=1 << 20) as client,
        pytest.raises(ResourceExhaustedError, match="max_message"),
    ):
        client.embed(IMAGE)
    assert not fake.behaviour.calls


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compression(fake: Served, compression: str) -> None:
    with fast(fake.url, compression=compression) as client:  # type: ignore[arg-type]
        assert client.embed(IMAGE).embedding is not None


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="host:port"):
        SamClient("http://localhost:8001")
    with pytest.raises(ValueError, match="compression"):
        SamClient("localhost:1", compression="zstd")  # type: ignore[arg-type]


def test_many_images_thread_pool(fake: Served) -> None:
    images = [np.full((40 + i, 60, 3), 20 * i, np.uint8) for i in range(6)]
    with fast(fake.url) as client:
        embs = client.embed_many(images, max_workers=3)
    assert [e.original_size for e in embs] == [(40 + i, 60) for i in range(6)]
    assert [float(e.embedding.mean()) for e in embs] == pytest.approx(
        [20 * i / 255 for i in range(6)], rel=1e-5
    )  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- asyncio


def test_async_matches_sync_under_concurrency(fake: Served) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (50 + 10 * i, 80, 3), dtype=np.uint8) for i in range(5)]
    prompts = [Prompt([[10 + i, 20]], [1]) for i in range(5)]
    with fast(fake.url) as client:
        expected = [client.predict(client.embed(im), p) for im, p in zip(images, prompts, strict=True)]

    async def main() -> list[Any]:
        async with AsyncSamClient(fake.url, backoff=0.01) as aclient:
            embs = await aclient.embed_many(images, concurrency=3)
            return await asyncio.gather(
                *(aclient.predict(e, p, low_res_logits=True) for e, p in zip(embs, prompts, strict=True))
            )

    got = asyncio.run(main())
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.low_res_logits, b.low_res_logits)


def test_async_errors_and_retries(fake: Served) -> None:
    async def main() -> None:
        async with AsyncSamClient(fake.url, backoff=0.01, retries=3) as client:
            fake.behaviour.unavailable_first = 2
            assert await client.server_live()
            assert await client.model_ready("sam")
            await client.wait_until_ready(timeout=5)
            with pytest.raises(InvalidInputError):
                await client.embed(np.zeros((1, 1, 3), np.uint8))
            pred = await client.segment(IMAGE, [Prompt([[1, 1]], [1]), Prompt([[5, 5]], [0])])
            assert isinstance(pred, list) and len(pred) == 2
            fake.behaviour.sleep = 1.0
        async with AsyncSamClient(fake.url, timeout=0.2) as client:
            with pytest.raises(DeadlineExceededError):
                await client.server_live()

    asyncio.run(main())


# ----------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}.test", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{name}.test\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


@pytest.fixture
def mtls_server(certs: Path) -> Iterator[Served]:
    creds = grpc.ssl_server_credentials(
        [((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    served = serve(creds)
    yield served
    served.server.stop(None)


def test_mutual_tls(mtls_server: Served, certs: Path) -> None:
    tls = TlsConfig(
        root_certificates=certs / "ca.pem",
        private_key=certs / "client.key",
        certificate_chain=(certs / "client.pem").read_bytes(),
        server_name_override="server.test",
    )
    with fast(mtls_server.url, tls=tls) as client:
        assert client.embed(IMAGE).embedding is not None

    async def main() -> bool:
        async with AsyncSamClient(mtls_server.url, tls=tls) as aclient:
            return await aclient.server_live()

    assert asyncio.run(main())


def test_tls_without_client_cert_is_refused(mtls_server: Served, certs: Path) -> None:
    tls = TlsConfig(root_certificates=certs / "ca.pem", server_name_override="server.test")
    with (
        fast(mtls_server.url, tls=tls, retries=0, timeout=5) as client,
        pytest.raises(ServerUnavailableError),
    ):
        client.server_live()
    with pytest.raises(ValueError, match="both"):
        TlsConfig(private_key=b"x").credentials()


def test_prompt_limits_and_chunking(fake: Served) -> None:
    prompts = [Prompt([[10 * i, 10]], [1]) for i in range(5)]
    with fast(fake.url, max_prompts_per_request=2, max_prompts=5) as client:
        emb = client.embed(IMAGE)
        preds = client.predict(emb, prompts)
        assert isinstance(preds, list) and len(preds) == 5
        decoder = [c for c in fake.behaviour.calls if c.model_name == "sam_decoder"]
        assert sorted(decode_request(c)["point_coords"].shape[1] for c in decoder) == [1, 2, 2]
        with pytest.raises(InvalidInputError, match="max_prompts=5"):
            client.predict(emb, [*prompts, prompts[0]])
    # each chunk's answers land at their prompt's position
    for i, pred in enumerate(preds):
        assert pred.masks[2, 10, 10 * i]

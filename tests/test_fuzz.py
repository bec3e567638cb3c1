"""Fuzzed inputs against a real tritonserver (issue 14, point 6: every bad input gets a clean status).

Hypothesis builds requests for every input of every model over raw gRPC (valid requests with
random prompts, then mutations: wrong datatypes, raw contents of the wrong size, other shapes
with matching contents of random bytes, NaN/inf/huge/negative values, unknown labels, missing,
extra and duplicated inputs, unknown requested outputs), and random arguments through the
SDK's public calls. Every case must end in a clean error (a gRPC status meaning "your request",
never INTERNAL/UNKNOWN or a timeout; the SDK's typed InvalidInputError) or a well-formed answer.
After every example the server is live and ready, the tritonserver process alive, and a good
request to the fuzzed model is answered bit-exactly as before fuzzing.

Budgets are small and derandomized so CI is quick and reproducible; ``FUZZ_EXAMPLES=500``
scales every test up locally.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import onnxruntime
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sam_triton import AmgParams, InvalidInputError, Prompt, RemoteSamPredictor, SamClient, SamTritonError
from sam_triton.proto import inference_pb2 as pb
from sam_triton.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from sam_triton_common.amg.wire import decode_result, encode_params
from sam_triton_common.contract import (
    AUTOMASK_MODEL,
    AUTOMASK_PARAMS,
    AUTOMASK_RESULT,
    CACHE_HIT,
    DECODER_INPUTS,
    DECODER_MODEL,
    DECODER_OUTPUTS,
    EMBEDDING_SHAPE,
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    IMAGE,
    IMAGE_EMBEDDINGS,
    IMAGE_SIZE,
    INPUT_SIZE,
    IOU_PREDICTIONS,
    LOW_RES_MASKS,
    LOW_RES_SIZE,
    MAX_SESSION_ID_BYTES,
    MODEL_FILE,
    MODEL_VERSION,
    POINT_LABELS,
    SESSION_ID,
    SESSION_MODEL,
)
from sam_triton_common.proto import automask_pb2

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0")) or None


def fuzz(default_examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=EXAMPLES or default_examples,
        deadline=None,
        derandomize=True,  # the same examples on every run: CI stays reproducible
        database=None,
        suppress_health_check=list(HealthCheck),
    )


CLEAN_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
"""Statuses that tell the caller what was wrong with its request; INTERNAL, UNKNOWN, a
deadline or UNAVAILABLE for a single request on an idle server are bugs."""

RPC_TIMEOUT = 60.0
REFERENCE_SESSION = "fuzz-reference-session"
PROMPT_NAMES = DECODER_INPUTS[1:]
DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "NOPE", ""]
ITEMSIZE = {"BOOL": 1, "UINT8": 1, "INT8": 1, "INT32": 4, "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8}
SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, 1e30, -1e30, -1.0, 1025.0, 0.5, 7.0, 2.0, -0.0, 1e-40]


# --------------------------------------------------------------------------- requests as data


@dataclass
class Tensor:
    datatype: str
    shape: list[int]
    raw: bytes

    def __repr__(self) -> str:  # what a failing example prints: never megabytes of pixels
        head = self.raw[:16] + (b"..." if len(self.raw) > 16 else b"")
        return f"Tensor({self.datatype!r}, {self.shape}, {len(self.raw)} bytes: {head!r})"


@dataclass
class Request:
    model: str
    inputs: list[tuple[str, Tensor]]
    outputs: list[str] = field(default_factory=list)

    def to_proto(self) -> pb.ModelInferRequest:
        message = pb.ModelInferRequest(model_name=self.model)
        for name, tensor in self.inputs:
            message.inputs.add(name=name, datatype=tensor.datatype, shape=tensor.shape)
            message.raw_input_contents.append(tensor.raw)
        for name in self.outputs:
            message.outputs.add(name=name)
        return message

    def tensor(self, name: str) -> Tensor | None:
        return next((t for n, t in self.inputs if n == name), None)


def tensor(array: np.ndarray) -> Tensor:
    if array.dtype == np.object_:
        raw = b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
        return Tensor("BYTES", list(array.shape), raw)
    names = {np.dtype(np.uint8): "UINT8", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}
    datatype = "BOOL" if array.dtype == np.bool_ else names[array.dtype]
    return Tensor(datatype, list(array.shape), np.ascontiguousarray(array).tobytes())


DTYPES = {"UINT8": np.uint8, "INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_}


def consistent(t: Tensor) -> bool:
    """Whether the raw contents hold exactly the elements of the shape."""
    return (
        t.datatype in DTYPES
        and all(d >= 0 for d in t.shape)
        and len(t.raw) == np.dtype(DTYPES[t.datatype]).itemsize * int(np.prod(t.shape))
    )


def as_array(t: Tensor) -> np.ndarray:
    return np.frombuffer(t.raw, DTYPES[t.datatype]).reshape(t.shape)


def image_tensors(height: int, width: int, seed: int) -> list[tuple[str, Tensor]]:
    image = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    image[0, :height, :width] = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    return [(IMAGE, tensor(image)), (INPUT_SIZE, tensor(np.array([[height, width]], np.int32)))]


def prompt_tensors(
    prompts: int, points: int, multimask: bool, with_mask: bool, seed: int
) -> list[tuple[str, Tensor]]:
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, IMAGE_SIZE, (1, prompts, points, 2)).astype(np.float32)
    labels = rng.choice(np.asarray(POINT_LABELS, np.float32), (1, prompts, points))
    mask = rng.normal(0, 5, (1, prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE)).astype(np.float32)
    has_mask = np.full((1, prompts), float(with_mask), np.float32)
    arrays = (coords, labels, mask, has_mask, np.array([[multimask]]))
    return [(name, tensor(a)) for name, a in zip(PROMPT_NAMES, arrays, strict=True)]


def reference_embedding() -> np.ndarray:
    return np.random.default_rng(7).normal(0, 1, (1, *EMBEDDING_SHAPE)).astype(np.float32)


def automask_tensors(image: np.ndarray, params: bytes) -> list[tuple[str, Tensor]]:
    return [(IMAGE, tensor(image[None])), (AUTOMASK_PARAMS, tensor(np.array([[params]], np.object_)))]


@st.composite
def valid_requests(draw: st.DrawFn, model: str) -> Request:
    """A request the model must answer (random sizes, prompts and switches)."""
    seed = draw(st.integers(0, 2**16))
    height, width = draw(st.integers(1, IMAGE_SIZE)), draw(st.integers(1, IMAGE_SIZE))
    prompts = prompt_tensors(
        draw(st.integers(1, 4)), draw(st.integers(0, 5)), draw(st.booleans()), draw(st.booleans()), seed
    )
    if model == ENCODER_MODEL:
        return Request(model, image_tensors(height, width, seed))
    if model == DECODER_MODEL:
        return Request(model, [(IMAGE_EMBEDDINGS, tensor(reference_embedding())), *prompts])
    if model == ENSEMBLE_MODEL:
        return Request(model, [*image_tensors(height, width, seed), *prompts])
    if model == SESSION_MODEL and draw(st.booleans()):  # an embed, never under the reference's id
        embed = (SESSION_ID, tensor(np.array([[b"fuzz-embed"]], np.object_)))
        return Request(model, [embed, *image_tensors(height, width, seed)], [CACHE_HIT])
    if model == SESSION_MODEL:
        session = (SESSION_ID, tensor(np.array([[REFERENCE_SESSION.encode()]], np.object_)))
        with_mask = as_array(prompts[3][1]).any()
        kept = prompts if with_mask or draw(st.booleans()) else [prompts[0], prompts[1], prompts[4]]
        return Request(model, [session, *kept], [LOW_RES_MASKS, IOU_PREDICTIONS, CACHE_HIT])
    size = st.integers(2, 40)
    image = np.random.default_rng(seed).integers(0, 256, (draw(size), draw(size), 3), np.uint8)
    params = AmgParams(
        points_per_side=draw(st.integers(1, 3)), pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    return Request(model, automask_tensors(image, encode_params(params)))


# --------------------------------------------------------------------------- mutations

DIMENSION = st.one_of(st.integers(0, 6), st.sampled_from([-1, -2, 1024, 256, 2**31, 2**40, 2**62]))


@st.composite
def mutated_requests(draw: st.DrawFn, model: str) -> Request:
    """A valid request with one to three random mutations."""
    request = draw(valid_requests(model))
    for _ in range(draw(st.integers(1, 3))):
        if not request.inputs:
            break
        index = draw(st.integers(0, len(request.inputs) - 1))
        name, t = request.inputs[index]
        kind = draw(
            st.sampled_from(
                [
                    "dtype",
                    "raw",
                    "shape",
                    "reshape",
                    "values",
                    "drop",
                    "extra",
                    "duplicate",
                    "outputs",
                    "crowd",
                ]
            )
        )
        if kind == "dtype":
            t = Tensor(draw(st.sampled_from(DATATYPES)), t.shape, t.raw)
        elif kind == "raw":
            cut = draw(st.integers(0, len(t.raw)))
            t = Tensor(t.datatype, t.shape, t.raw[:cut] + draw(st.binary(max_size=16)))
        elif kind == "shape":
            t = Tensor(t.datatype, draw(st.lists(DIMENSION, max_size=6)), t.raw)
        elif kind == "reshape":  # another shape, with contents of the matching size
            shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=6))
            size = int(np.prod(shape)) * ITEMSIZE.get(t.datatype, 1)
            raw = np.random.default_rng(draw(st.integers(0, 2**16))).bytes(size)
            if t.datatype == "BYTES":
                raw = struct.pack("<I", 1) * int(np.prod(shape)) if draw(st.booleans()) else raw
            t = Tensor(t.datatype, shape, raw)
        elif kind == "values" and t.datatype in ITEMSIZE and consistent(t):
            array = as_array(t).copy()
            if array.size:
                flat = array.reshape(-1)
                picks = draw(st.lists(st.integers(0, flat.size - 1), min_size=1, max_size=4))
                for i in picks:
                    if t.datatype == "FP32":
                        flat[i] = draw(st.sampled_from(SPECIAL_FLOATS))
                    elif t.datatype == "BOOL":
                        flat[i] = draw(st.booleans())
                    else:
                        info = np.iinfo(array.dtype)
                        flat[i] = draw(st.integers(int(info.min), int(info.max)))
            t = tensor(array)
        elif kind == "crowd":  # prompts and points up to and past the server's limits (64 each)
            many = st.sampled_from([1, 63, 64, 65, 1000])
            crowd = dict(prompt_tensors(draw(many), draw(many), False, False, 0)[:2])
            request.inputs = [(n, crowd.get(n, t)) for n, t in request.inputs]
            continue
        elif kind == "drop":
            request.inputs.pop(index)
            continue
        elif kind == "extra":
            extra = draw(st.sampled_from(["bogus", SESSION_ID, IMAGE, INPUT_SIZE, *DECODER_INPUTS, ""]))
            request.inputs.append((extra, t))
            continue
        elif kind == "duplicate":
            request.inputs.append((name, t))
            continue
        elif kind == "outputs":
            names = st.sampled_from(
                ["bogus", "", IMAGE_EMBEDDINGS, CACHE_HIT, AUTOMASK_RESULT, *DECODER_OUTPUTS]
            )
            request.outputs = draw(st.lists(names, max_size=3))
            continue
        request.inputs[index] = (name, t)
    return request


# --------------------------------------------------------------------------- the server and its checks


@dataclass
class Fuzzing:
    served: Any
    stub: GRPCInferenceServiceStub
    good: dict[str, tuple[Request, dict[str, bytes]]] = field(default_factory=dict)
    session_embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    decoder: Any = None  # onnxruntime session of sam_decoder's graph, made on first use

    def infer(self, request: Request) -> pb.ModelInferResponse | grpc.RpcError:
        try:
            reply: pb.ModelInferResponse = self.stub.ModelInfer(request.to_proto(), timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            return exc
        return reply

    def expect_clean(self, request: Request) -> pb.ModelInferResponse | None:
        """The answer, or None for a clean error; anything else fails the example."""
        outcome = self.infer(request)
        if isinstance(outcome, grpc.RpcError):
            code, details = outcome.code(), outcome.details() or ""
            assert code in CLEAN_CODES, f"{request.model}: {code.name}: {details}"
            assert details.strip(), f"{request.model}: {code.name} without a message"
            return None
        return outcome

    def answer(self, request: Request) -> dict[str, bytes]:
        """The raw outputs of a good request (automask: the records, without its timings)."""
        reply = self.infer(request)
        assert not isinstance(reply, grpc.RpcError), (
            f"{request.model}: {reply.code().name}: {reply.details()}"
        )
        outputs = dict(zip([o.name for o in reply.outputs], reply.raw_output_contents, strict=True))
        if request.model == AUTOMASK_MODEL:
            result = automask_pb2.AutomaskResult.FromString(outputs[AUTOMASK_RESULT][4:])
            outputs[AUTOMASK_RESULT] = b"".join(r.SerializeToString() for r in result.records)
        return outputs

    def reference_masks(self, request: Request) -> dict[str, np.ndarray]:
        """What a valid mask request must answer, computed another way: sam_decoder's own ONNX
        graph in this process (sam_decoder), sam_encoder then sam_decoder (the ensemble), or
        sam_decoder on the session's embedding (sam_session's split graphs)."""
        feed = {name: as_array(t) for name, t in request.inputs if name in DECODER_INPUTS}
        if request.model == DECODER_MODEL:
            if self.decoder is None:
                path = self.served.repository / DECODER_MODEL / MODEL_VERSION / MODEL_FILE
                self.decoder = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            return dict(zip(DECODER_OUTPUTS, self.decoder.run(list(DECODER_OUTPUTS), feed), strict=True))
        if request.model == ENSEMBLE_MODEL:
            encoded = self.answer(
                Request(ENCODER_MODEL, [(n, t) for n, t in request.inputs if n in (IMAGE, INPUT_SIZE)])
            )
            embedding = np.frombuffer(encoded[IMAGE_EMBEDDINGS], np.float32).reshape(1, *EMBEDDING_SHAPE)
        else:
            embedding = self.session_embedding
        if "mask_input" not in feed:
            prompts = feed["point_coords"].shape[1]
            feed["mask_input"] = np.zeros((1, prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
            feed["has_mask_input"] = np.zeros((1, prompts), np.float32)
        feed[IMAGE_EMBEDDINGS] = embedding
        decoded = self.answer(
            Request(DECODER_MODEL, [(name, tensor(np.ascontiguousarray(a))) for name, a in feed.items()])
        )
        return {name: np.frombuffer(decoded[name], np.float32) for name in DECODER_OUTPUTS}

    def assert_correct(self, request: Request, reply: pb.ModelInferResponse) -> None:
        expected = self.reference_masks(request)
        outputs = dict(zip([o.name for o in reply.outputs], reply.raw_output_contents, strict=True))
        for name in DECODER_OUTPUTS:
            got = np.frombuffer(outputs[name], np.float32)
            np.testing.assert_allclose(
                got, np.reshape(expected[name], -1), rtol=1e-4, atol=1e-4, err_msg=name
            )

    def assert_healthy(self, model: str) -> None:
        """Up, ready, and the model's good request still answered bit-exactly."""
        assert self.served.process.returncode is None, "tritonserver died"
        assert self.stub.ServerLive(pb.ServerLiveRequest(), timeout=RPC_TIMEOUT).live
        assert self.stub.ServerReady(pb.ServerReadyRequest(), timeout=RPC_TIMEOUT).ready
        request, expected = self.good[model]
        assert self.answer(request) == expected, f"{model}: a good request's answer changed"


GOOD_SEED = 11


def good_requests() -> dict[str, Request]:
    prompts = prompt_tensors(2, 3, True, False, GOOD_SEED)
    session = (SESSION_ID, tensor(np.array([[REFERENCE_SESSION.encode()]], np.object_)))
    image = np.random.default_rng(GOOD_SEED).integers(0, 256, (24, 32, 3), np.uint8)
    params = AmgParams(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    return {
        ENCODER_MODEL: Request(ENCODER_MODEL, image_tensors(300, 400, GOOD_SEED)),
        DECODER_MODEL: Request(DECODER_MODEL, [(IMAGE_EMBEDDINGS, tensor(reference_embedding())), *prompts]),
        ENSEMBLE_MODEL: Request(ENSEMBLE_MODEL, [*image_tensors(300, 400, GOOD_SEED), *prompts]),
        SESSION_MODEL: Request(SESSION_MODEL, [session, *prompts], [LOW_RES_MASKS, IOU_PREDICTIONS]),
        AUTOMASK_MODEL: Request(AUTOMASK_MODEL, automask_tensors(image, encode_params(params))),
    }


@pytest.fixture(scope="module")
def fuzzing(triton_server: Any) -> Iterator[Fuzzing]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(triton_server.grpc_url, options=options) as channel:
        state = Fuzzing(triton_server, GRPCInferenceServiceStub(channel))  # type: ignore[no-untyped-call]
        embed = Request(SESSION_MODEL, [
            (SESSION_ID, tensor(np.array([[REFERENCE_SESSION.encode()]], np.object_))),
            *image_tensors(300, 400, GOOD_SEED),
        ], [CACHE_HIT])  # fmt: skip
        state.answer(embed)
        fetched = state.answer(Request(SESSION_MODEL, embed.inputs[:1], [IMAGE_EMBEDDINGS]))
        state.session_embedding = np.frombuffer(fetched[IMAGE_EMBEDDINGS], np.float32).reshape(
            1, *EMBEDDING_SHAPE
        )
        state.good = {model: (request, state.answer(request)) for model, request in good_requests().items()}
        yield state
        for model in state.good:  # nothing the fuzzers sent changed any model's answers
            state.assert_healthy(model)


def check_answer(request: Request, reply: pb.ModelInferResponse) -> None:
    """A well-formed answer: mask outputs shaped by the request's prompts."""
    outputs = {
        o.name: (list(o.shape), raw) for o, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }
    if request.model == AUTOMASK_MODEL:
        decode_result(automask_pb2.AutomaskResult.FromString(outputs[AUTOMASK_RESULT][1][4:]))
        return
    coords = request.tensor("point_coords")
    prompted = any(request.tensor(name) is not None for name in PROMPT_NAMES)
    if request.model == SESSION_MODEL and prompted and LOW_RES_MASKS in (request.outputs or [LOW_RES_MASKS]):
        assert LOW_RES_MASKS in outputs, "sam_session ignored the prompt inputs it was given"
    if LOW_RES_MASKS in outputs and coords is not None:
        multimask = request.tensor("multimask_output")
        k = 3 if multimask is not None and as_array(multimask).reshape(-1)[0] else 1
        batch, prompts = coords.shape[:2]
        shape, raw = outputs[LOW_RES_MASKS]
        assert shape == [batch, prompts, k, LOW_RES_SIZE, LOW_RES_SIZE] and len(raw) == 4 * np.prod(shape)
        if IOU_PREDICTIONS in outputs:
            assert outputs[IOU_PREDICTIONS][0] == [batch, prompts, k]
    if IMAGE_EMBEDDINGS in outputs:
        shape, raw = outputs[IMAGE_EMBEDDINGS]
        assert shape[1:] == list(EMBEDDING_SHAPE) and len(raw) == 4 * np.prod(shape)


# --------------------------------------------------------------------------- raw gRPC, every model

MODELS = [ENCODER_MODEL, DECODER_MODEL, ENSEMBLE_MODEL, SESSION_MODEL, AUTOMASK_MODEL]
BUDGET = {ENCODER_MODEL: 20, DECODER_MODEL: 30, ENSEMBLE_MODEL: 15, SESSION_MODEL: 30, AUTOMASK_MODEL: 12}


@pytest.mark.parametrize("model", MODELS)
def test_valid_requests_are_answered(model: str, fuzzing: Fuzzing) -> None:
    @fuzz(BUDGET[model] // 4)
    @given(request=valid_requests(model))
    def check(request: Request) -> None:
        reply = fuzzing.expect_clean(request)
        assert reply is not None, f"{model} refused a valid request"
        check_answer(request, reply)
        if request.tensor("point_coords") is not None:
            fuzzing.assert_correct(request, reply)

    check()
    fuzzing.assert_healthy(model)


@pytest.mark.parametrize("model", MODELS)
def test_mutated_requests_end_cleanly(model: str, fuzzing: Fuzzing) -> None:
    @fuzz(BUDGET[model])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        request = data.draw(mutated_requests(model))
        reply = fuzzing.expect_clean(request)
        if reply is not None:
            check_answer(request, reply)
        fuzzing.assert_healthy(model)

    check()


SESSION_IDS = st.one_of(
    st.binary(max_size=MAX_SESSION_ID_BYTES + 8),
    st.text(max_size=MAX_SESSION_ID_BYTES // 2).map(str.encode),
    st.sampled_from([b"", b"\xff\xfe", b"\x00", b"sha256:", b"x" * MAX_SESSION_ID_BYTES, b"x" * 257]),
)


@fuzz(25)
@given(session_id=SESSION_IDS, what=st.sampled_from(["lookup", "click", "embedding"]))
def test_session_ids(session_id: bytes, what: str, fuzzing: Fuzzing) -> None:
    """Any id: 1..256 bytes of UTF-8 is a lookup/miss, anything else INVALID_ARGUMENT."""
    inputs = [(SESSION_ID, tensor(np.array([[session_id]], np.object_)))]
    outputs = [CACHE_HIT]
    if what == "click":
        inputs += prompt_tensors(1, 2, True, False, 0)
    elif what == "embedding":
        outputs = [IMAGE_EMBEDDINGS]
    outcome = fuzzing.infer(Request(SESSION_MODEL, inputs, outputs))
    try:
        valid = 1 <= len(session_id) <= MAX_SESSION_ID_BYTES and bool(session_id.decode("utf-8"))
    except UnicodeDecodeError:
        valid = False
    if not valid:
        assert isinstance(outcome, grpc.RpcError), f"{session_id!r} was accepted"
        assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT and "session_id" in (
            outcome.details() or ""
        )
    elif session_id != REFERENCE_SESSION.encode() and what != "lookup":
        assert isinstance(outcome, grpc.RpcError) and outcome.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert not isinstance(outcome, grpc.RpcError), outcome.details()
    fuzzing.assert_healthy(SESSION_MODEL)


INT32 = st.one_of(st.integers(-3, 4), st.sampled_from([2**31 - 1, -(2**31), 200, 1000]))
FLOATS = st.one_of(st.floats(-2, 2), st.sampled_from([np.nan, np.inf, -np.inf, 1e38, -1e38]))
GRID = st.builds(automask_pb2.PointGrid, xy=st.lists(FLOATS, max_size=9))


@fuzz(20)
@given(
    params=st.one_of(
        st.binary(max_size=64),
        st.builds(
            automask_pb2.AutomaskParams,
            points_per_side=INT32,
            points_per_batch=INT32,
            pred_iou_thresh=FLOATS,
            stability_score_thresh=FLOATS,
            stability_score_offset=FLOATS,
            box_nms_thresh=FLOATS,
            crop_n_layers=INT32,
            crop_nms_thresh=FLOATS,
            crop_overlap_ratio=FLOATS,
            crop_n_points_downscale_factor=INT32,
            point_grids=st.lists(GRID, max_size=3),
            min_mask_region_area=INT32,
            mask_threshold=FLOATS,
        ).map(lambda m: m.SerializeToString()),
    ),
    height=st.sampled_from([0, 1, 2, 5, 33]),
    width=st.sampled_from([1, 2, 7, 48, 3000]),
)
def test_automask_params(params: bytes, height: int, width: int, fuzzing: Fuzzing) -> None:
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)
    request = Request(AUTOMASK_MODEL, automask_tensors(image, params))
    reply = fuzzing.expect_clean(request)
    if reply is not None:
        check_answer(request, reply)
    fuzzing.assert_healthy(AUTOMASK_MODEL)


def session_request(session_id: bytes, *inputs: tuple[str, Tensor]) -> Request:
    return Request(
        SESSION_MODEL, [(SESSION_ID, tensor(np.array([[session_id]], np.object_))), *inputs], [CACHE_HIT]
    )


def automask_request(**fields: Any) -> Request:
    params = automask_pb2.AutomaskParams(points_per_batch=64, crop_n_points_downscale_factor=1, **fields)
    return Request(
        AUTOMASK_MODEL, automask_tensors(np.zeros((16, 16, 3), np.uint8), params.SerializeToString())
    )


PROMPTS = dict(prompt_tensors(1, 2, True, False, 0))
IMAGE_INPUTS = dict(image_tensors(8, 8, 0))
FOUND = [  # what the fuzzers found: (request, the message the server must answer with)
    # an unbounded crop pyramid hung the stub until Triton killed it: every later request failed
    (automask_request(points_per_side=2, crop_n_layers=2**31 - 1), "crop_n_layers must be <= 16"),
    (automask_request(points_per_side=2, crop_n_layers=4), "crop_n_layers=4 means 341 crops"),
    # the point grid was allocated before the prompt limit was checked: INTERNAL (out of memory)
    (automask_request(points_per_side=10**9), "this server allows at most 16384"),
    # undecodable ids were decoded with replacement characters: b"\xff" and b"\xfe" shared an embedding
    (session_request(b"\xff"), "session_id must be UTF-8"),
    (session_request(b"ok\xfe"), "session_id must be UTF-8"),
    # half-given inputs were ignored and the request answered as a plain lookup
    (session_request(b"s", (INPUT_SIZE, IMAGE_INPUTS[INPUT_SIZE])), "input_size given without image"),
    (session_request(b"s", ("point_labels", PROMPTS["point_labels"])), "given without point_coords"),
    (session_request(b"s", ("multimask_output", PROMPTS["multimask_output"])), "given without point_coords"),
]


@pytest.mark.parametrize(("request_", "message"), FOUND, ids=[m for _, m in FOUND])
def test_found_by_fuzzing(request_: Request, message: str, fuzzing: Fuzzing) -> None:
    outcome = fuzzing.infer(request_)
    assert isinstance(outcome, grpc.RpcError)
    assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (outcome.details() or "")
    fuzzing.assert_healthy(request_.model)


# --------------------------------------------------------------------------- the SDK's public calls

ANY_NUMBERS = st.one_of(
    st.none(),
    st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-2000, 2000)), max_size=6),
    st.lists(st.lists(st.floats(-50, 500), min_size=0, max_size=3), max_size=4),
    st.sampled_from(["abc", [[1, 2]], [[np.nan, 1]], [[1e300, 5]], [-1, 2, 3], [[10, 10, 20, 20]]]),
)
MASK_INPUTS = st.one_of(
    st.none(),
    st.sampled_from(
        [(1, LOW_RES_SIZE, LOW_RES_SIZE), (LOW_RES_SIZE, LOW_RES_SIZE), (2, 256, 256), (1, 64, 64)]
    ).map(lambda s: np.zeros(s, np.float32)),
)


@st.composite
def prompt_arguments(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "point_coords": draw(ANY_NUMBERS),
        "point_labels": draw(ANY_NUMBERS),
        "box": draw(ANY_NUMBERS),
        "mask_input": draw(MASK_INPUTS),
    }


@fuzz(200)
@given(arguments=prompt_arguments())
def test_prompt_construction(arguments: dict[str, Any]) -> None:
    try:
        prompt = Prompt(**arguments)
    except InvalidInputError:
        return
    assert prompt.point_coords is None or (
        prompt.point_coords.ndim == 2 and np.isfinite(prompt.point_coords).all()
    )


IMAGES = st.one_of(
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([None, 1, 2, 3, 4, 5])).map(
        lambda s: np.full(s[:2] if s[2] is None else s, 128, np.uint8)
    ),
    st.sampled_from([np.float32, np.int64, np.bool_, np.uint16]).map(lambda d: np.ones((8, 8, 3), d)),
    st.binary(max_size=32),
    st.sampled_from([np.zeros((1, 5000, 3), np.uint8), np.zeros((2, 2, 2, 3), np.uint8), "/nonexistent.png"]),
)


@pytest.fixture(scope="module")
def sdk(fuzzing: Fuzzing) -> Iterator[SamClient]:
    with SamClient(fuzzing.served.grpc_url, timeout=RPC_TIMEOUT) as client:
        yield client


def sdk_clean(call: Callable[[], Any]) -> Any:
    """The call's answer, or None for the SDK's typed bad-input error; other errors fail."""
    try:
        return call()
    except InvalidInputError as exc:
        assert str(exc).strip()
        return None
    except SamTritonError as exc:
        pytest.fail(f"not a bad-input error: {type(exc).__name__}: {exc}")


@fuzz(20)
@given(image=IMAGES, arguments=prompt_arguments(), multimask=st.booleans())
def test_sdk_calls(
    image: Any, arguments: dict[str, Any], multimask: bool, sdk: SamClient, fuzzing: Fuzzing
) -> None:
    embedding = sdk_clean(lambda: sdk.embed(image))
    prompt = sdk_clean(lambda: Prompt(**arguments))
    if embedding is not None and prompt is not None:
        prediction = sdk_clean(lambda: sdk.predict(embedding, prompt, multimask_output=multimask))
        segmented = sdk_clean(lambda: sdk.segment(image, prompt, multimask_output=multimask))
        assert (prediction is None) == (segmented is None)  # the same checks on both paths
        if prediction is not None:
            assert prediction.masks.shape[-2:] == embedding.original_size
    if embedding is not None:
        sdk_clean(lambda: sdk.automask(image, AmgParams(points_per_side=1)))
    fuzzing.assert_healthy(SESSION_MODEL)


@pytest.fixture(scope="module")
def predictor(fuzzing: Fuzzing) -> Iterator[RemoteSamPredictor]:
    with RemoteSamPredictor(fuzzing.served.grpc_url, timeout=RPC_TIMEOUT) as remote:
        remote.set_image(np.random.default_rng(3).integers(0, 256, (48, 64, 3), np.uint8))
        yield remote


@fuzz(25)
@given(arguments=prompt_arguments(), multimask=st.booleans(), logits=st.booleans())
def test_remote_predictor(
    arguments: dict[str, Any], multimask: bool, logits: bool, predictor: RemoteSamPredictor, fuzzing: Fuzzing
) -> None:
    result = sdk_clean(
        lambda: predictor.predict(**arguments, multimask_output=multimask, return_logits=logits)
    )
    if result is not None:
        masks, scores, low_res = result
        assert masks.shape == (3 if multimask else 1, 48, 64) and scores.shape == masks.shape[:1]
        assert low_res.shape == (masks.shape[0], LOW_RES_SIZE, LOW_RES_SIZE)
    fuzzing.assert_healthy(SESSION_MODEL)

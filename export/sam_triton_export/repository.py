"""The Triton model repository: config.pbtxt for each target, model.py shims and warm-up data
(export.json, what was exported from which weights, is written by
:func:`sam_triton_common.contract.write_export_info`).

Every target exposes the same five models (``sam_encoder``, ``sam_decoder``, the ``sam``
ensemble, ``sam_session`` and ``sam_automask``; names in :mod:`sam_triton_common.contract`),
tensor names, dtypes and dims, so a client cannot tell which one it talks to; only the
backend, instance kind and batching policy differ. A SAM 2 repository adds ``sam_video``
(video tracking sessions over a gRPC stream), whose graphs the exporter writes beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sam_triton_common import contract
from sam_triton_common.contract import (
    AUTOMASK_PARAMS,
    AUTOMASK_RESULT,
    IMAGE,
    IMAGE_EMBEDDINGS,
    IMAGE_FEATURES_FILE,
    INPUT_SIZE,
    IOU_PREDICTIONS,
    LOW_RES_MASKS,
    MODEL_FILE,
    PROMPT_DECODER_FILE,
)
from sam_triton_server.backend.automask import AutomaskLimits
from sam_triton_server.backend.cpu_precision import CPU_PRECISIONS, FP32, PRECISION_PARAMETER
from sam_triton_server.backend.ort import CPU_RUNTIMES
from sam_triton_server.launcher.queues import QueueLimits

from sam_triton_export.model_types import EMBED_DIM, EMBED_SIZE, IMAGE_SIZE, LOW_RES_SIZE
from sam_triton_export.pbtxt import Comment, Enum, Field, Message, render

TARGETS = ("python-onnxruntime", "onnxruntime", "tensorrt")
ENCODER, DECODER, ENSEMBLE = contract.ENCODER_MODEL, contract.DECODER_MODEL, contract.ENSEMBLE_MODEL
SESSION, AUTOMASK, VERSION = contract.SESSION_MODEL, contract.AUTOMASK_MODEL, contract.MODEL_VERSION
VIDEO = contract.VIDEO_MODEL
_WARMUP_DIR = "warmup"
_WARMUP_INPUT_SIZE = INPUT_SIZE
_WARMUP_INPUT_SIZE_SOURCE = ("input_data_file", _WARMUP_INPUT_SIZE)

# Measured on 2 shared CPU cores with onnxruntime (CPU) when these were chosen: a tiny-test
# encoder call takes ~0.4 s (vit_b: seconds) and a decoder call ~90 ms for one prompt, while
# batching 4-8 decoder calls did NOT lower the per-prompt cost on this CPU. So the queue
# delays are kept at a level that is invisible next to one call (2 ms / 1 ms): they cost
# nothing when idle and let a GPU, where per-call overhead dominates, gather batches.
ENCODER_QUEUE_DELAY_US = 2000
DECODER_QUEUE_DELAY_US = 1000


# Latency classes (docs/operating/many-users.md), as Triton priority levels (1 goes first): a click on a held
# embedding is interactive, an embed foreground, automatic mask generation batch work. Each
# model's default is its usual class; a client overrides it per request (KServe "priority").
PRIORITY_LEVELS = 3
INTERACTIVE, FOREGROUND, BATCH = 1, 2, 3
# CPU niceness added to the encoder's and automask's stub processes: on a CPU-bound server
# the session's click threads (niceness 0) get the cores first. Measured with tiny-test on
# the shared 2-core machine, two users embedding while one clicks: click p90 350-432 ms with
# the encoder at 0, 196-378 ms at 10 (noisy; embeds then get less CPU while clicks run).
# Automatic masks are batch work, below both. No effect on GPU work.
ENCODER_NICE = 10
AUTOMASK_NICE = 15
# Triton honours a request's own timeout (the SDK sends the caller's time left) only when it
# is below the queue's default, and a default of 0 means none: so the default is a real,
# generous one. Nothing waits in a queue longer than this.
QUEUE_TIMEOUT_US = 600 * 1_000_000


@dataclass(frozen=True)
class RepositoryOptions:
    target: str = "python-onnxruntime"
    max_batch: int = 8  # largest batch Triton forms for the encoder and the decoder
    max_prompts: int = 64  # prompts per decoder request (SamAutomaticMaskGenerator sends 64)
    max_points: int = 64  # points per prompt, box corners and padding point included
    instances: int = 1  # model instances per model (per GPU for the native targets)
    # Not in to_dict (export.json): configs follow them on every export, weights do not.
    queues: QueueLimits = QueueLimits()
    family: str = contract.SAM1.name  # the model family (contract.FAMILIES): its tensors
    # `export --name`: the model's name in a repository of several (None: the unnamed
    # layout). Not in to_dict: it is where the export lives, not what it is.
    name: str | None = None
    # What the encoder computes in on the CPU (cpu_precision.CPU_PRECISIONS): bf16 is set at run
    # time on the fp32 graph. Not in to_dict: export.json records the export's precision.
    cpu_precision: str = FP32

    def __post_init__(self) -> None:
        if self.name is not None:
            contract.check_model_name(self.name)
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.cpu_precision not in CPU_PRECISIONS:
            raise ValueError(f"cpu_precision must be one of {CPU_PRECISIONS}, got {self.cpu_precision!r}")
        for name in ("max_batch", "max_prompts", "max_points", "instances"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        values = {
            k: getattr(self, k) for k in ("target", "max_batch", "max_prompts", "max_points", "instances")
        }
        # Recorded only when it is not SAM 1, so a SAM 1 repository exported before families
        # existed still matches (export --if-changed does not redo a vit_h export and its plans).
        return values if self.family == contract.SAM1.name else {**values, "family": self.family}

    def served(self, role: str) -> str:
        """The Triton name of ``role`` (ENCODER, DECODER, ...) for this model."""
        return contract.served_name(self.name, role)


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    dims: tuple[int, ...]

    def message(self, ragged: bool = False, optional: bool = False) -> Message:
        fields: list[Field] = [
            ("name", self.name),
            ("data_type", Enum(self.dtype)),
            ("dims", list(self.dims)),
        ]
        if ragged:
            fields.append(("allow_ragged_batch", True))
        if optional:
            fields.append(("optional", True))
        return Message(tuple(fields))


ENCODER_INPUTS = (
    Tensor(IMAGE, "TYPE_UINT8", (IMAGE_SIZE, IMAGE_SIZE, 3)),
    Tensor(INPUT_SIZE, "TYPE_INT32", (2,)),
)
ENCODER_OUTPUTS = (Tensor(IMAGE_EMBEDDINGS, "TYPE_FP32", (EMBED_DIM, EMBED_SIZE, EMBED_SIZE)),)
DECODER_INPUTS = (
    Tensor(IMAGE_EMBEDDINGS, "TYPE_FP32", (EMBED_DIM, EMBED_SIZE, EMBED_SIZE)),
    Tensor("point_coords", "TYPE_FP32", (-1, -1, 2)),
    Tensor("point_labels", "TYPE_FP32", (-1, -1)),
    Tensor("mask_input", "TYPE_FP32", (-1, 1, LOW_RES_SIZE, LOW_RES_SIZE)),
    Tensor("has_mask_input", "TYPE_FP32", (-1,)),
    Tensor("multimask_output", "TYPE_BOOL", (1,)),
)
DECODER_OUTPUTS = (
    Tensor(LOW_RES_MASKS, "TYPE_FP32", (-1, -1, LOW_RES_SIZE, LOW_RES_SIZE)),
    Tensor(IOU_PREDICTIONS, "TYPE_FP32", (-1, -1)),
)


Tensors = tuple[Tensor, ...]


def family_tensors(options: RepositoryOptions) -> tuple[Tensors, Tensors, Tensors]:
    """(encoder inputs, encoder outputs, decoder inputs) of the options' model family: SAM 1's
    as above; SAM 2 takes the original image and adds its high-resolution features."""
    family = contract.family_named(options.family)
    if family is contract.SAM1:
        return ENCODER_INPUTS, ENCODER_OUTPUTS, DECODER_INPUTS
    features = tuple(Tensor(name, "TYPE_FP32", shape) for name, shape in family.features.items())
    return (Tensor(IMAGE, "TYPE_UINT8", (-1, -1, 3)),), features, (*features, *DECODER_INPUTS[1:])


SESSION_ID = Tensor(contract.SESSION_ID, "TYPE_STRING", (1,))
CACHE_HIT = Tensor(contract.CACHE_HIT, "TYPE_BOOL", (1,))
# An embed's image as a JPEG/PNG/WebP file, in place of the pixels (sam_session only).
ENCODED_IMAGE = Tensor(contract.ENCODED_IMAGE, "TYPE_STRING", (1,))
# Compact click answers (contract.MASKS ...): optional inputs, outputs sent only when requested.
COMPACT_INPUTS = (
    Tensor(contract.ORIGINAL_SIZE, "TYPE_INT32", (2,)),
    Tensor(contract.REFINE_FROM, "TYPE_STRING", (-1,)),
    Tensor(contract.REFINE_MASK, "TYPE_INT32", (-1,)),
)
COMPACT_OUTPUTS = (
    Tensor(contract.MASKS, "TYPE_STRING", (-1, -1)),
    Tensor(contract.PREDICTION_ID, "TYPE_STRING", (-1,)),
)
# Low-res logits kept for refinements by id: 64 MiB is ~85 multimask clicks.
PREDICTION_CACHE_BYTES = 64 << 20
# 1 GiB holds 73 sessions (a 4 MiB embedding + 10 MiB of decoder image features each); idle
# sessions are dropped after an hour.
SESSION_CACHE_BYTES = 1 << 30
SESSION_CACHE_TTL_SECONDS = 3600

# sam_video (SAM 2): one request per operation; the inputs beyond the session and the operation
# are optional (each operation reads its own, models/video.py).
VIDEO_OP = Tensor(contract.VIDEO_OP, "TYPE_STRING", (1,))
VIDEO_INPUTS = (
    Tensor(contract.FRAME_INDEX, "TYPE_INT32", (1,)),
    Tensor(contract.NUM_FRAMES, "TYPE_INT32", (1,)),
    Tensor(contract.VIDEO_SIZE, "TYPE_INT32", (2,)),
    Tensor(IMAGE, "TYPE_UINT8", (-1, -1, 3)),
    ENCODED_IMAGE,
    Tensor(contract.OBJECT_ID, "TYPE_INT32", (1,)),
    Tensor(contract.VIDEO_POINTS, "TYPE_FP32", (-1, 2)),
    Tensor(contract.VIDEO_LABELS, "TYPE_INT32", (-1,)),
    Tensor(contract.VIDEO_BOX, "TYPE_FP32", (4,)),
    Tensor(contract.CLEAR_OLD_POINTS, "TYPE_BOOL", (1,)),
    Tensor(contract.VIDEO_MASK, "TYPE_STRING", (1,)),
    Tensor(contract.TRACK_MODE, "TYPE_STRING", (1,)),
    Tensor(contract.TRACK_REVERSE, "TYPE_BOOL", (1,)),
    Tensor(contract.TRACK_START, "TYPE_BOOL", (1,)),
)
VIDEO_OUTPUTS = (
    Tensor(contract.VIDEO_FRAMES, "TYPE_INT32", (-1,)),
    Tensor(contract.OBJECT_IDS, "TYPE_INT32", (-1,)),
    Tensor(contract.MASKS, "TYPE_STRING", (-1, -1)),
    Tensor(contract.OBJECT_SCORES, "TYPE_FP32", (-1, -1)),
    Tensor(contract.FRAME_DROPPED, "TYPE_BOOL", (1,)),
)
# Sessions (QueueLimits.video_sessions) hold at most 1 GiB together; an idle one is dropped
# after 10 minutes.
VIDEO_MAX_BYTES = 1 << 30
VIDEO_TTL_SECONDS = 600

AUTOMASK_INPUTS = (
    # The original image: the server crops and resizes it with sam_triton_common.transforms itself.
    Tensor(IMAGE, "TYPE_UINT8", (-1, -1, 3)),
    Tensor(AUTOMASK_PARAMS, "TYPE_STRING", (1,)),  # serialized sam_triton.automask.AutomaskParams
)
AUTOMASK_OUTPUTS = (Tensor(AUTOMASK_RESULT, "TYPE_STRING", (1,)),)  # serialized AutomaskResult

# Warm-up shapes (batch dim excluded) of the variable-shape decoder inputs: one prompt, one point.
_DECODER_WARMUP_DIMS = {
    "point_coords": (1, 1, 2),
    "point_labels": (1, 1),
    "mask_input": (1, 1, LOW_RES_SIZE, LOW_RES_SIZE),
    "has_mask_input": (1,),
}


def model_dir(repository: Path, model: str) -> Path:
    return repository / model / VERSION


def model_file(repository: Path, model: str, target: str = "python-onnxruntime") -> Path:
    """The weights file Triton (or the Python backend) loads for ``model`` in ``target``."""
    return model_dir(repository, model) / ("model.plan" if target == "tensorrt" else MODEL_FILE)


def _header(target: str) -> Comment:
    return Comment(
        f"Written by `sam-triton export --target {target}` (sam_triton_export/repository.py);\n"
        "change the generator, not this file: a test compares the committed copy with it."
    )


def _backend_fields(target: str) -> list[Field]:
    if target == "python-onnxruntime":
        return [
            Comment("model.py runs model.onnx through onnxruntime (TensorRT/CUDA providers when present)."),
            ("backend", "python"),
        ]
    if target == "onnxruntime":
        return [("backend", "onnxruntime"), ("default_model_filename", MODEL_FILE)]
    return [("backend", "tensorrt"), ("default_model_filename", "model.plan")]


def _instance_group(options: RepositoryOptions) -> Field:
    if options.target == "python-onnxruntime":
        return (
            "instance_group",
            [
                Message.of(
                    Comment(
                        "KIND_CPU: the bundled CPU-only tritonserver can load it; model.py itself\n"
                        "picks the CUDA/TensorRT execution providers when the machine has a GPU."
                    ),
                    ("count", options.instances),
                    ("kind", Enum("KIND_CPU")),
                )
            ],
        )
    return ("instance_group", [Message.of(("count", options.instances), ("kind", Enum("KIND_GPU")))])


def _queue(priority: int, max_queue_size: int) -> list[Field]:
    """Priority levels and a bounded queue whose requests may carry their own deadline."""
    policy = Message.of(
        ("timeout_action", Enum("REJECT")),
        ("default_timeout_microseconds", QUEUE_TIMEOUT_US),
        ("allow_timeout_override", True),
        ("max_queue_size", max_queue_size),
    )
    return [
        ("priority_levels", PRIORITY_LEVELS),
        ("default_priority_level", priority),
        ("default_queue_policy", policy),
    ]


def _dynamic_batching(options: RepositoryOptions, delay_us: int, priority: int, max_queue_size: int) -> Field:
    preferred = [n for n in (2, 4, 8, 16, 32, 64) if n <= options.max_batch]
    fields: list[Field] = []
    if preferred:
        fields.append(("preferred_batch_size", preferred))
    fields.append(("max_queue_delay_microseconds", delay_us))
    return ("dynamic_batching", Message(tuple(fields + _queue(priority, max_queue_size))))


def _request_queue(priority: int, max_queue_size: int) -> Field:
    """For one-request-at-a-time models: the dynamic batcher only for its queue (batch size 1)."""
    return ("dynamic_batching", Message(tuple(_queue(priority, max_queue_size))))


def _parameters(values: dict[str, str]) -> list[Field]:
    return [
        ("parameters", Message.of(("key", key), ("value", Message.of(("string_value", value)))))
        for key, value in values.items()
    ]


def _warmup_input(name: str, tensor: Tensor, dims: Sequence[int], source: Field) -> Message:
    value = Message.of(("data_type", Enum(tensor.dtype)), ("dims", list(dims)), source)
    return Message.of(("key", name), ("value", value))


def encoder_config(options: RepositoryOptions) -> str:
    inputs, outputs, _ = family_tensors(options)
    image = inputs[0]
    warmup_image = _warmup_input("image", image, (IMAGE_SIZE, IMAGE_SIZE, 3), ("zero_data", True))
    if len(inputs) == 1:
        warmup = Message.of(("name", "zero image 1024x1024"), ("batch_size", 1), ("inputs", warmup_image))
    else:
        input_size = inputs[1]
        warmup = Message.of(
            ("name", "zero image 1024x1024"),
            ("batch_size", 1),
            ("inputs", warmup_image),
            # input_size must be a valid (h, w); Triton can only read non-zero values from a file.
            ("inputs", _warmup_input(INPUT_SIZE, input_size, input_size.dims, _WARMUP_INPUT_SIZE_SOURCE)),
        )
    fields: list[Field] = [
        _header(options.target),
        ("name", options.served(ENCODER)),
        *_backend_fields(options.target),
        ("max_batch_size", options.max_batch),
        ("input", [t.message() for t in inputs]),
        ("output", [t.message() for t in outputs]),
        _dynamic_batching(options, ENCODER_QUEUE_DELAY_US, FOREGROUND, options.queues.encoder),
        _instance_group(options),
    ]
    if options.target == "python-onnxruntime":
        fields += _parameters(
            {
                "onnx_file": MODEL_FILE,
                "intra_op_threads": "0",
                # SAM 2's encoder takes images of any size: OpenVINO's static graph cannot.
                "cpu_runtime": CPU_RUNTIMES["encoder"] if len(inputs) > 1 else "onnxruntime",
                "nice": str(ENCODER_NICE),
                "family": options.family,
                # Only where it is not fp32, so fp32 configs stay as they were.
                **({PRECISION_PARAMETER: options.cpu_precision} if options.cpu_precision != FP32 else {}),
            }
        )
    fields.append(("model_warmup", [warmup]))
    return render(Message(tuple(fields)))


def decoder_config(options: RepositoryOptions) -> str:
    python = options.target == "python-onnxruntime"
    decoder_inputs = family_tensors(options)[2]
    warmup_inputs = [
        _warmup_input(t.name, t, _DECODER_WARMUP_DIMS.get(t.name, t.dims), ("zero_data", True))
        for t in decoder_inputs
    ]
    warmup = Message(
        (("name", "one point, zero embedding"), ("batch_size", 1), *(("inputs", m) for m in warmup_inputs))
    )
    fields: list[Field] = [
        _header(options.target),
        ("name", options.served(DECODER)),
        *_backend_fields(options.target),
        # Natively a batch is one client's request (no dynamic batching, below): above 1 the
        # onnxruntime and tensorrt backends' auto-complete would add a dynamic batcher anyway,
        # and a TensorRT plan would hold activation memory for max_batch x max_prompts rows.
        ("max_batch_size", options.max_batch if python else 1),
    ]
    if python:
        fields += [
            Comment(
                "allow_ragged_batch: requests with different prompt/point counts share a batch;\n"
                "model.py groups them by (P, N, multimask) into one onnxruntime call each."
            ),
            ("input", [t.message(ragged=True) for t in decoder_inputs]),
            ("output", [t.message() for t in DECODER_OUTPUTS]),
            _dynamic_batching(options, DECODER_QUEUE_DELAY_US, INTERACTIVE, options.queues.decoder),
        ]
    else:
        fields += [
            Comment(
                "No dynamic batching here, on purpose: Triton batches requests only when their\n"
                "shapes match, and multimask_output is a value the graph reads from row 0 only,\n"
                "so a batch mixing single- and multi-mask requests would give some of them the\n"
                "wrong K. (The python-onnxruntime target groups by (P, N, multimask) instead.)\n"
                "Hence also no bounded queue: Triton bounds only the dynamic batcher's queue."
            ),
            ("input", [t.message() for t in decoder_inputs]),
            ("output", [t.message() for t in DECODER_OUTPUTS]),
        ]
    fields.append(_instance_group(options))
    if python:
        fields += _parameters(
            {
                "onnx_file": MODEL_FILE,
                "intra_op_threads": "0",
                "cpu_runtime": CPU_RUNTIMES["decoder"],
                "max_prompts": str(options.max_prompts),
                "max_points": str(options.max_points),
                "family": options.family,
            }
        )
    fields.append(("model_warmup", [warmup]))
    return render(Message(tuple(fields)))


def ensemble_config(options: RepositoryOptions) -> str:
    def mapping(key: str, names: Sequence[str], internal: dict[str, str]) -> list[Field]:
        return [(key, Message.of(("key", n), ("value", internal.get(n, n)))) for n in names]

    encoder_inputs, encoder_outputs, decoder_inputs = family_tensors(options)
    embedding = {t.name: f"_{t.name}" for t in encoder_outputs}
    encoder_step = Message(
        (
            ("model_name", options.served(ENCODER)),
            ("model_version", -1),
            *mapping("input_map", [t.name for t in encoder_inputs], {}),
            *mapping("output_map", [t.name for t in encoder_outputs], embedding),
        )
    )
    decoder_step = Message(
        (
            ("model_name", options.served(DECODER)),
            ("model_version", -1),
            *mapping("input_map", [t.name for t in decoder_inputs], embedding),
            *mapping("output_map", [t.name for t in DECODER_OUTPUTS], {}),
        )
    )
    inputs = [*encoder_inputs, *decoder_inputs[len(encoder_outputs) :]]
    return render(
        Message.of(
            _header(options.target),
            Comment("Image + prompts -> masks in one round trip; the embedding never leaves the server."),
            ("name", options.served(ENSEMBLE)),
            ("platform", "ensemble"),
            # No more than its decoder takes (Triton refuses an ensemble that does).
            ("max_batch_size", options.max_batch if options.target == "python-onnxruntime" else 1),
            ("input", [t.message() for t in inputs]),
            ("output", [t.message() for t in DECODER_OUTPUTS]),
            ("ensemble_scheduling", Message.of(("step", [encoder_step, decoder_step]))),
        )
    )


def session_config(options: RepositoryOptions) -> str:
    encoder_inputs = family_tensors(options)[0]
    decoder_dir = f"../../{options.served(DECODER)}/{VERSION}"
    optional = (*encoder_inputs, ENCODED_IMAGE, *DECODER_INPUTS[1:], *COMPACT_INPUTS)
    inputs = [SESSION_ID.message(), *(t.message(optional=True) for t in optional)]
    outputs = [t.message() for t in (*DECODER_OUTPUTS, *ENCODER_OUTPUTS, CACHE_HIT, *COMPACT_OUTPUTS)]
    return render(
        Message.of(
            _header(options.target),
            Comment(
                "Server-held embeddings (sam_triton_server/backend/models/session.py): embed once,\n"
                "then clicks carry prompts only. A Python-backend model on every target, with exactly one\n"
                "instance because the cache lives in that instance's memory. No dynamic batcher, on\n"
                "purpose: it polls for a free instance every 500 ms, which stalled back-to-back\n"
                "clicks (sam_triton_server/backend/click_lane.py). execute() only dispatches: clicks\n"
                "and lookups run one at a time in arrival order (bounded by click_queue_size), encodes\n"
                "on a small pool (embed_workers, bounded by embed_queue_size), so clicks never wait\n"
                "for them; both drop a request whose caller's deadline has passed."
            ),
            ("name", options.served(SESSION)),
            ("backend", "python"),
            ("max_batch_size", 1),
            ("input", inputs),
            ("output", outputs),
            ("instance_group", [Message.of(("count", 1), ("kind", Enum("KIND_CPU")))]),
            *_parameters(
                {
                    # The decoder's own ONNX files: one set of weights, no BLS hop per click;
                    # mask-free clicks run the split graphs on features cached per embedding.
                    "onnx_file": f"{decoder_dir}/model.onnx",
                    **(
                        {
                            "image_features_file": f"{decoder_dir}/{IMAGE_FEATURES_FILE}",
                            "prompt_decoder_file": f"{decoder_dir}/{PROMPT_DECODER_FILE}",
                        }
                        if contract.family_named(options.family).split_decoder
                        else {"family": options.family}
                    ),
                    "encoder_model": options.served(ENCODER),
                    "intra_op_threads": "0",
                    "cpu_runtime": CPU_RUNTIMES["decoder"],
                    "max_prompts": str(options.max_prompts),
                    "max_points": str(options.max_points),
                    "cache_bytes": str(SESSION_CACHE_BYTES),
                    "cache_ttl_seconds": str(SESSION_CACHE_TTL_SECONDS),
                    "prediction_cache_bytes": str(PREDICTION_CACHE_BYTES),
                    "click_queue_size": str(options.queues.session),
                    "embed_workers": str(options.queues.embed_workers),
                    "embed_queue_size": str(options.queues.embed_queue),
                }
            ),
        )
    )


def automask_config(options: RepositoryOptions) -> str:
    decoder_dir = f"../../{options.served(DECODER)}/{VERSION}"
    return render(
        Message.of(
            _header(options.target),
            Comment(
                "Automatic mask generation next to the model\n"
                "(sam_triton_server/backend/models/automask.py): crops are encoded through sam_encoder\n"
                "(BLS), prompts decoded in-process with the decoder's ONNX files, and only the kept\n"
                "masks travel back, as RLE. A Python-backend model on every target; one instance,\n"
                "since a request already keeps it busy."
            ),
            ("name", options.served(AUTOMASK)),
            ("backend", "python"),
            ("max_batch_size", 1),
            ("input", [t.message() for t in AUTOMASK_INPUTS]),
            ("output", [t.message() for t in AUTOMASK_OUTPUTS]),
            _request_queue(BATCH, options.queues.automask),
            ("instance_group", [Message.of(("count", 1), ("kind", Enum("KIND_CPU")))]),
            *_parameters(
                {
                    **(
                        {
                            # Every SAM 1 AMG prompt is mask-free: the split decoder, features
                            # once per crop.
                            "onnx_file": f"{decoder_dir}/{PROMPT_DECODER_FILE}",
                            "image_features_file": f"{decoder_dir}/{IMAGE_FEATURES_FILE}",
                        }
                        if contract.family_named(options.family).split_decoder
                        else {"onnx_file": f"{decoder_dir}/model.onnx", "family": options.family}
                    ),
                    "encoder_model": options.served(ENCODER),
                    # Crops per BLS request: the encoder's own batch limit.
                    "encoder_max_batch": str(options.max_batch),
                    "intra_op_threads": "0",
                    "cpu_runtime": CPU_RUNTIMES["decoder"],
                    "nice": str(AUTOMASK_NICE),
                    # Request limits: the model's defaults, written out so operators see and tune them.
                    **{key: str(value) for key, value in asdict(AutomaskLimits()).items()},
                }
            ),
        )
    )


def video_config(options: RepositoryOptions) -> str:
    inputs = [SESSION_ID.message(), VIDEO_OP.message(), *(t.message(optional=True) for t in VIDEO_INPUTS)]
    return render(
        Message.of(
            _header(options.target),
            Comment(
                "SAM 2 video tracking sessions (sam_triton_server/backend/models/video.py): a client\n"
                "streams frames and prompts over one gRPC stream (ModelStreamInfer) and gets one answer\n"
                "per request. Decoupled, so that a stream's answers go back as each is ready; one\n"
                "instance, because the sessions live in its memory. execute() only dispatches: the\n"
                "video lane runs each session's requests in order, prompts before live frames before\n"
                "offline frames across sessions (bounded by video_queue_size). Frames are encoded\n"
                "through sam_encoder (BLS); the tracker's graphs are in this model's version directory."
            ),
            ("name", options.served(VIDEO)),
            ("backend", "python"),
            ("max_batch_size", 0),
            ("model_transaction_policy", Message.of(("decoupled", True))),
            ("input", inputs),
            ("output", [t.message() for t in VIDEO_OUTPUTS]),
            ("instance_group", [Message.of(("count", 1), ("kind", Enum("KIND_CPU")))]),
            *_parameters(
                {
                    "encoder_model": options.served(ENCODER),
                    "intra_op_threads": "0",
                    "max_sessions": str(options.queues.video_sessions),
                    "max_bytes": str(VIDEO_MAX_BYTES),
                    "ttl_seconds": str(VIDEO_TTL_SECONDS),
                    "video_workers": "1",
                    "video_queue_size": str(options.queues.video),
                }
            ),
        )
    )


def shim(model: str, family: str = contract.SAM1.name) -> str:
    module = {
        ENCODER: "encoder",
        DECODER: "decoder",
        SESSION: "session",
        AUTOMASK: "automask",
        VIDEO: "video",
    }[model]
    if model in (SESSION, AUTOMASK) and family != contract.SAM1.name:
        module = f"{module}_{family}"  # the family's module (models/session_sam2.py, automask_sam2.py)
    return f"from sam_triton_server.backend.models.{module} import TritonPythonModel  # noqa\n"


def repository_files(options: RepositoryOptions) -> dict[str, bytes]:
    """Every non-weight file of the repository for ``options``, by relative path under the
    role names (``sam_encoder/...``; :func:`write_repository_files` puts a named model's
    under its own names)."""
    files = {
        f"{ENCODER}/config.pbtxt": encoder_config(options).encode(),
        f"{DECODER}/config.pbtxt": decoder_config(options).encode(),
        f"{ENSEMBLE}/config.pbtxt": ensemble_config(options).encode(),
        f"{ENSEMBLE}/{VERSION}/.keep": b"",  # Triton wants a version directory even for ensembles
    }
    if options.family != contract.SAM1.name:
        files[f"{SESSION}/config.pbtxt"] = session_config(options).encode()
        files[f"{SESSION}/{VERSION}/model.py"] = shim(SESSION, options.family).encode()
        files[f"{AUTOMASK}/config.pbtxt"] = automask_config(options).encode()
        files[f"{AUTOMASK}/{VERSION}/model.py"] = shim(AUTOMASK, options.family).encode()
        files[f"{VIDEO}/config.pbtxt"] = video_config(options).encode()
        files[f"{VIDEO}/{VERSION}/model.py"] = shim(VIDEO).encode()
        if options.target == "python-onnxruntime":
            for model in (ENCODER, DECODER):
                files[f"{model}/{VERSION}/model.py"] = shim(model).encode()
        return files
    files |= {
        f"{SESSION}/config.pbtxt": session_config(options).encode(),
        f"{SESSION}/{VERSION}/model.py": shim(SESSION).encode(),
        f"{AUTOMASK}/config.pbtxt": automask_config(options).encode(),
        f"{AUTOMASK}/{VERSION}/model.py": shim(AUTOMASK).encode(),
        f"{ENCODER}/{_WARMUP_DIR}/{_WARMUP_INPUT_SIZE}": _int32_bytes([IMAGE_SIZE, IMAGE_SIZE]),
    }
    if options.target == "python-onnxruntime":
        for model in (ENCODER, DECODER):
            files[f"{model}/{VERSION}/model.py"] = shim(model).encode()
    return files


def _int32_bytes(values: Sequence[int]) -> bytes:
    return b"".join(int(v).to_bytes(4, "little", signed=True) for v in values)


def write_repository_files(repository: Path, options: RepositoryOptions) -> list[Path]:
    """Write configs, shims and warm-up data; leaves weights and other models alone."""
    written = []
    for relative, content in repository_files(options).items():
        role, _, rest = relative.partition("/")
        path = repository / options.served(role) / rest
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
        written.append(path)
    if options.target != "python-onnxruntime":
        # A python shim left over from another target would make the native config lie.
        for model in (ENCODER, DECODER):
            (model_dir(repository, options.served(model)) / "model.py").unlink(missing_ok=True)
    return written

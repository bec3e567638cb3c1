"""The served contract: every name and size that the exporter writes, the server serves and
the SDK calls, in one dependency-free module (docs/architecture.md and
docs/operating/many-users.md describe it).

Change a name here and the generated model repository, the server-side models and the SDK
follow; nothing else spells these facts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- models

ENCODER_MODEL = "sam_encoder"
DECODER_MODEL = "sam_decoder"
ENSEMBLE_MODEL = "sam"
SESSION_MODEL = "sam_session"
AUTOMASK_MODEL = "sam_automask"
VIDEO_MODEL = "sam_video"
"""SAM 2 only: server-held video tracking sessions over a gRPC stream (a decoupled model)."""
MODEL_VERSION = "1"
"""The one version directory the exporter writes."""
MODEL_ROLES = (ENCODER_MODEL, DECODER_MODEL, ENSEMBLE_MODEL, SESSION_MODEL, AUTOMASK_MODEL, VIDEO_MODEL)

# Several models in one repository (``sam-triton export --name NAME``): each named model's
# Triton names are its roles above prefixed with "NAME." (``sam2.1-tiny.sam_encoder``); the
# unnamed model keeps the bare names, so a one-model repository needs no name anywhere.
MODEL_NAME_SEPARATOR = "."
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_model_name(name: str) -> str:
    """``name`` when it can name a model in a repository, else ValueError saying what can."""
    valid = 0 < len(name) <= 64 and name[0].isascii() and name[0].isalnum() and set(name) <= _NAME_CHARACTERS
    if not valid or name.endswith(MODEL_NAME_SEPARATOR):
        raise ValueError(
            f"model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (e.g. sam2.1-tiny)"
        )
    return name


def served_name(model: str | None, role: str) -> str:
    """The Triton model name of ``role`` (one of MODEL_ROLES) for the model exported under
    ``model`` (None or "": the unnamed one)."""
    return f"{check_model_name(model)}{MODEL_NAME_SEPARATOR}{role}" if model else role


def model_of(served: str) -> tuple[str | None, str] | None:
    """(model name or None, role) of a Triton model name, or None when it is no SAM role."""
    if served in MODEL_ROLES:
        return None, served
    model, _, role = served.rpartition(MODEL_NAME_SEPARATOR)
    return (model, role) if model and role in MODEL_ROLES else None


# --------------------------------------------------------------------------- sizes

IMAGE_SIZE = 1024
"""Side of the square encoder input (SAM's ``image_encoder.img_size``)."""

LOW_RES_SIZE = 256
"""Side of the decoder's low-resolution mask logits (and of ``mask_input``)."""

EMBEDDING_SHAPE = (256, 64, 64)
"""Shape of one image embedding (C, H, W)."""

POINT_LABELS = (-1.0, 0.0, 1.0, 2.0, 3.0)
"""Valid ``point_labels``: -1 padding, 0 background, 1 foreground, 2/3 box corners."""

# --------------------------------------------------------------------------- tensors
# Inputs and outputs of the served models, with dtypes and shapes ([B, ...] is the batch,
# P prompts, N points per prompt).

IMAGE = "image"
"""UINT8 [B, 1024, 1024, 3] (encoder, session; zero-padded resized image) or [1, H, W, 3] (automask)."""
INPUT_SIZE = "input_size"
"""INT32 [B, 2]: (height, width) of the resized image inside the padded input."""
IMAGE_EMBEDDINGS = "image_embeddings"
"""FP32 [B, *EMBEDDING_SHAPE]."""
ENCODER_INPUTS = (IMAGE, INPUT_SIZE)

DECODER_INPUTS = (
    IMAGE_EMBEDDINGS,  # FP32 [B, 256, 64, 64]
    "point_coords",  # FP32 [B, P, N, 2], in the 1024 frame
    "point_labels",  # FP32 [B, P, N]
    "mask_input",  # FP32 [B, P, 1, 256, 256]
    "has_mask_input",  # FP32 [B, P]
    "multimask_output",  # BOOL [B, 1]
)
LOW_RES_MASKS = "low_res_masks"
"""FP32 [B, P, M, 256, 256] mask logits (M = 3 with multimask_output, else 1)."""
IOU_PREDICTIONS = "iou_predictions"
"""FP32 [B, P, M]."""
DECODER_OUTPUTS = (LOW_RES_MASKS, IOU_PREDICTIONS)

SESSION_ID = "session_id"
"""BYTES [1]: the id a ``sam_session`` embedding is kept under."""
CACHE_HIT = "cache_hit"
"""BOOL [1]: whether ``sam_session`` already held the session's embedding."""
ENCODED_IMAGE = "encoded_image"
"""BYTES [1], ``sam_session`` only, in place of ``image`` (and ``input_size``): the image as a
JPEG, PNG or WebP file. The server decodes it with ``sam_triton_common.images``, the SDK's own
decoder (EXIF orientation, modes), then prepares it as its family does, so the pixels are those
a raw upload sends. A content id must be the decoded pixels' (else ``CONTENT_ID_MISMATCH``)."""
CONTENT_ID_MISMATCH = "decoded pixels do not match the content id"
"""How ``sam_session``'s INVALID_ARGUMENT for an ``encoded_image`` that decodes to other pixels
than its ``sha256:`` id names starts (client and server Pillow builds disagree on the file:
the SDK then uploads the pixels instead)."""

# Compact answers of a ``sam_session`` click (docs/sdk/wire-formats.md): what the caller
# requests is what is computed and sent.
MASKS = "masks"
"""BYTES [B, P, M] output: each mask at the original image size, thresholded on the server
and encoded by ``sam_triton_common.mask_codec`` (run lengths or bit-packed, the smaller)."""
ORIGINAL_SIZE = "original_size"
"""INT32 [B, 2] input: (H, W) of the user's image; required when ``masks`` is requested."""
MAX_MASK_PIXELS = 8192 * 8192
"""The largest ``original_size`` (H * W) ``sam_session`` makes masks for."""
PREDICTION_ID = "prediction_id"
"""BYTES [B, P] output: an id per prompt under which ``sam_session`` keeps the prompt's
low-res logits for a later refinement (requesting it is what asks the server to keep them)."""
REFINE_FROM = "refine_from"
"""BYTES [B, P] input: per prompt, a ``prediction_id`` whose logits become its ``mask_input``
(empty: none), so a refinement uploads no 256 KiB mask."""
REFINE_MASK = "refine_mask"
"""INT32 [B, P] input: which of that prediction's masks (0..M-1) each prompt refines."""
PREDICTION_NOT_FOUND = "prediction not found"
"""How ``sam_session``'s NOT_FOUND message for an unknown ``refine_from`` id starts."""
PREDICTION_NOT_HELD = "is not held here"
"""In that message when this server does not hold the id (never made here, or dropped), as
opposed to one made on another image of the session: the SDK can then make it again."""

AUTOMASK_PARAMS = "params"
"""BYTES [1]: one serialized ``AutomaskParams`` message."""
AUTOMASK_RESULT = "result"
"""BYTES [1, 1]: one serialized ``AutomaskResult`` message."""

# Video tracking (``sam_video``, docs/sdk/video.md): every request names its session and one
# operation; each is answered by one response on the same gRPC stream (ModelStreamInfer).
VIDEO_OP = "video_op"
"""BYTES [1]: what the request does, one of VIDEO_OPS."""
VIDEO_OPS = ("open", "frame", "add_points", "add_mask", "remove_object", "clear_frame", "reset", "close")
FRAME_INDEX = "frame_idx"
"""INT32 [1]: the frame a request is about."""
VIDEO_FRAMES = "frames"
"""INT32 [F] output: the frames an answer is about (one for a frame or a prompt; those a
``remove_object`` changed)."""
NUM_FRAMES = "num_frames"
"""INT32 [1] (``open``, optional): the whole video's length; absent for a live stream."""
VIDEO_SIZE = "video_size"
"""INT32 [2] (``open``): (H, W) of every frame of the session."""
OBJECT_ID = "obj_id"
"""INT32 [1]: the object a prompt is for (any int the caller picks)."""
VIDEO_POINTS = "points"
"""FP32 [N, 2] (``add_points``): (x, y) in the frame's pixels."""
VIDEO_LABELS = "labels"
"""INT32 [N] (``add_points``): 1 foreground, 0 background."""
VIDEO_BOX = "box"
"""FP32 [4] (``add_points``, with or without points): (x0, y0, x1, y1) in the frame's pixels."""
CLEAR_OLD_POINTS = "clear_old_points"
"""BOOL [1] (``add_points``): replace the object's earlier prompts on this frame (default true)."""
VIDEO_MASK = "mask"
"""BYTES [1] (``add_mask``): one (H, W) mask encoded by ``sam_triton_common.mask_codec``."""
TRACK_MODE = "mode"
"""BYTES [1] (``frame``): "live" (dropped once its deadline passed) or "offline" (propagation)."""
TRACK_REVERSE = "reverse"
"""BOOL [1] (``frame``): tracked from later frames (``propagate_in_video(reverse=True)``)."""
TRACK_START = "start"
"""BOOL [1] (``frame``): the first frame of a propagation; later ones must follow it in order."""
OBJECT_IDS = "obj_ids"
"""INT32 [K] output: the session's objects, in the order they were added."""
OBJECT_SCORES = "object_scores"
"""FP32 [F, K] output: each object's presence score logit per frame (> 0: present)."""
FRAME_DROPPED = "dropped"
"""BOOL [1] output: the live frame's deadline passed before it was tracked (no masks sent)."""
VIDEO_OUTPUTS = (VIDEO_FRAMES, OBJECT_IDS, MASKS, OBJECT_SCORES, FRAME_DROPPED)
"""``masks`` is BYTES [F, K] here: each object's mask on each frame, at the video's size."""
VIDEO_SESSION_NOT_FOUND = "video session not found"
"""How ``sam_video``'s NOT_FOUND message for a session it does not hold starts."""
STREAM_ERROR_CODES = {
    "INVALID_ARG": "INVALID_ARGUMENT",
    "NOT_FOUND": "NOT_FOUND",
    "UNAVAILABLE": "UNAVAILABLE",
    "INTERNAL": "INTERNAL",
}
"""A gRPC stream answers errors as text only: ``sam_video`` starts each message with its
status (``"NOT_FOUND: ..."``), whose gRPC code name the SDK looks up here."""

# --------------------------------------------------------------------------- graph files

MODEL_FILE = "model.onnx"
"""The graph of each ONNX model (``model.plan`` for TensorRT)."""

# The split of the decoder for mask-free prompts (sam_triton_export.onnx_decoder), two files
# beside the decoder's model.onnx: image_features' outputs, computed once per embedding, are
# prompt_decoder inputs.
IMAGE_FEATURES_FILE = "image_features.onnx"
PROMPT_DECODER_FILE = "prompt_decoder.onnx"
IMAGE_FEATURE_NAMES = (
    "image_keys",
    "token_to_image_keys_t",
    "token_to_image_values",
    "image_to_token_queries",
)
PROMPT_DECODER_INPUTS = (*IMAGE_FEATURE_NAMES, "point_coords", "point_labels", "multimask_output")

# --------------------------------------------------------------------------- model families
# One entry per family: what the encoder takes and gives, what the decoder needs beside the
# prompts, and how a client prepares an image. The model names and the prompt tensors above
# are the same for every family; a family adds tensors, never renames one.

RESIZE_LONGEST_SIDE = "resize-longest-side-pad"
"""SAM 1: longest side to 1024 (ResizeLongestSide), zero-pad bottom/right; the graph normalises."""
RESIZE_SQUARE = "resize-square"
"""SAM 2: the whole original image is sent; the graph resizes it to a 1024 square exactly as
``SAM2Transforms`` does (antialiased bilinear on [0, 1] floats), then normalises."""

HIGH_RES_FEATS = ("high_res_feats_0", "high_res_feats_1")
"""SAM 2's high-resolution feature maps (``conv_s0``/``conv_s1`` already applied)."""


class Family:
    """The served facts of one model family (instances are constants; see FAMILIES)."""

    def __init__(
        self,
        name: str,
        preprocessing: str,
        encoder_inputs: tuple[str, ...],
        features: dict[str, tuple[int, ...]],
        always_pad_prompts: bool,
        split_decoder: bool,
    ) -> None:
        self.name = name
        self.preprocessing = preprocessing
        self.encoder_inputs = encoder_inputs
        self.features = dict(features)
        """Encoder outputs, each FP32 [B, *shape], all of them decoder inputs, embedding first."""
        self.always_pad_prompts = always_pad_prompts
        """Whether a -1 padding point follows the prompt even with a box (SAM 2's predictor
        merges boxes into points and always pads; SAM 1 pads only without a box)."""
        self.split_decoder = split_decoder
        """Whether the decoder's image_features/prompt_decoder split graphs are exported."""

    @property
    def encoder_outputs(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def decoder_inputs(self) -> tuple[str, ...]:
        return (*self.features, *DECODER_INPUTS[1:])

    @property
    def feature_bytes(self) -> int:
        """FP32 bytes of one image's encoder outputs (what a server-held session keeps)."""
        total = 0
        for shape in self.features.values():
            size = 4
            for dim in shape:
                size *= dim
            total += size
        return total

    def __repr__(self) -> str:
        return f"Family({self.name!r})"


SAM1 = Family(
    "sam1",
    RESIZE_LONGEST_SIDE,
    ENCODER_INPUTS,
    {IMAGE_EMBEDDINGS: EMBEDDING_SHAPE},
    always_pad_prompts=False,
    split_decoder=True,
)
SAM2 = Family(
    "sam2",
    RESIZE_SQUARE,
    (IMAGE,),
    {IMAGE_EMBEDDINGS: EMBEDDING_SHAPE, HIGH_RES_FEATS[0]: (32, 256, 256), HIGH_RES_FEATS[1]: (64, 128, 128)},
    always_pad_prompts=True,
    split_decoder=False,
)
FAMILIES = {family.name: family for family in (SAM1, SAM2)}


def family_named(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def family_of_encoder(outputs: tuple[str, ...] | list[str]) -> Family:
    """The family whose encoder has exactly these outputs: how a client learns, from the
    served model's metadata, which family it talks to."""
    for family in FAMILIES.values():
        if sorted(family.encoder_outputs) == sorted(outputs):
            return family
    raise ValueError(f"no model family has encoder outputs {sorted(outputs)}")


# --------------------------------------------------------------------------- session ids

SESSION_HEADER = "sam-session-id"
"""gRPC header carrying the session id of every ``sam_session`` call, so a load balancer in
front of several Triton replicas can route a session's requests to one replica (hash on it)."""

CONTENT_ID_PREFIX = "sha256:"
"""Ids with this prefix name an image's content; the server skips encoding one it holds."""

MAX_SESSION_ID_BYTES = 256
"""The longest id ``sam_session`` accepts."""

EMBEDDING_NOT_FOUND = "embedding not found"
"""How ``sam_session``'s NOT_FOUND message for an unknown session id starts."""

# --------------------------------------------------------------------------- authentication

API_KEY_HEADER = "sam-api-key"
"""The header a server started with an API key checks (``sam-triton serve --api-key``); the
HTTP endpoint reads it under this name."""
API_KEY_METADATA = f"triton-grpc-protocol-{API_KEY_HEADER}"
"""The same header on gRPC: Triton prefixes the headers of its restricted protocols."""
API_KEY_ENV = "SAM_TRITON_API_KEY"
"""Where clients and ``sam-triton serve`` read the API key when none is passed."""

# --------------------------------------------------------------------------- export.json

EXPORT_INFO_FILE = "export.json"
"""What was exported from which weights, beside the encoder (written by ``sam-triton export``)."""


def export_info_path(repository: Path, model: str | None = None) -> Path:
    return repository / served_name(model, ENCODER_MODEL) / EXPORT_INFO_FILE


def write_export_info(repository: Path, info: dict[str, Any], model: str | None = None) -> Path:
    path = export_info_path(repository, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def read_export_info(repository: Path, model: str | None = None) -> dict[str, Any] | None:
    """The export.json of the repository's model ``model`` (None: the unnamed one), or None
    when it is missing or unreadable."""
    try:
        info = json.loads(export_info_path(repository, model).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def exported_models(repository: Path) -> list[str | None]:
    """The models exported into ``repository`` (None for the unnamed one, first), by the
    export.json beside each encoder."""
    found = []
    for path in repository.glob(f"*/{EXPORT_INFO_FILE}"):
        parsed = model_of(path.parent.name)
        if parsed is not None and parsed[1] == ENCODER_MODEL:
            found.append(parsed[0])
    return sorted(found, key=lambda name: (name is not None, name or ""))

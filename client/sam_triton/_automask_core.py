"""The sans-IO automatic-mask operation (see :mod:`sam_triton._core` for the op/Call pattern).

One ``ModelInfer`` call to ``sam_automask`` carries the original image and the serialized
parameters; the server crops, encodes, decodes, filters and runs NMS next to the model and
answers with image-frame RLE records, which are turned into the reference's records here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from sam_triton_common.amg import AmgParams, MaskRecord, family_params, records_from_mask_data
from sam_triton_common.amg.wire import decode_result, encode_params
from sam_triton_common.contract import AUTOMASK_MODEL as AUTOMASK_MODEL
from sam_triton_common.contract import AUTOMASK_PARAMS, AUTOMASK_RESULT, IMAGE
from sam_triton_common.proto import automask_pb2

from . import errors
from ._core import Op, family_op, infer_call
from ._tensors import build_infer_request, decode_infer_response, require_output
from .config import ClientConfig
from .images import ImageFormat, ImageInput, load_image


@dataclass(frozen=True)
class AutomaskOutput:
    """The records of one image plus what it cost.

    ``response_bytes`` is the size of the gRPC answer; ``server_seconds``/``encode_seconds``
    and ``crops``/``prompts`` are reported by the server. ``params``: what the generator ran
    with (the served family's defaults filled in).
    """

    records: list[MaskRecord]
    image_size: tuple[int, int]
    response_bytes: int
    crops: int
    prompts: int
    encode_seconds: float
    server_seconds: float
    params: AmgParams


GeneratorArguments = Mapping[str, Any]
"""Some of :class:`AmgParams`' fields by name: the served model family's generator defaults fill
in the rest (``SAM2AutomaticMaskGenerator``'s for a SAM 2 model, ``SamAutomaticMaskGenerator``'s
for SAM 1)."""


def automask_op(
    config: ClientConfig,
    image: ImageInput,
    params: AmgParams | GeneratorArguments | None,
    image_format: ImageFormat = "RGB",
    model: str | None = None,
) -> Op[AutomaskOutput]:
    """Automatic masks of one image (``SamAutomaticMaskGenerator.generate``), server-side;
    ``model`` defaults to ``config.models.automask``. ``params``: an :class:`AmgParams` is sent as
    it is; arguments (None: none) get the served family's defaults for the rest, which costs one
    ModelMetadata call per client."""
    model = model or config.models.automask
    if not isinstance(params, AmgParams):
        family = yield from family_op(config)
        params = family_params(family.name, **(params or {}))
    rgb = load_image(image, image_format, max_pixels=config.max_pixels)
    inputs = {
        IMAGE: np.ascontiguousarray(rgb)[None],
        AUTOMASK_PARAMS: np.array([[encode_params(params)]], dtype=np.object_),
    }
    request = build_infer_request(model, inputs, [AUTOMASK_RESULT], model_version=config.models.version)
    (resp,) = yield [infer_call(config, request, f"automask via {model!r}")]
    raw = require_output(decode_infer_response(resp), AUTOMASK_RESULT, model).reshape(-1)
    if raw.size != 1:
        raise errors.ServerError(f"{model!r} returned {raw.size} results for one image")
    try:
        result = automask_pb2.AutomaskResult.FromString(bytes(raw[0]))
    except DecodeError as exc:
        raise errors.ServerError(f"{model!r} returned an unreadable AutomaskResult: {exc}") from None
    size = (int(rgb.shape[0]), int(rgb.shape[1]))
    if (result.height, result.width) != size:
        raise errors.ServerError(
            f"{model!r} answered for a {result.height}x{result.width} image, sent {size[0]}x{size[1]}"
        )
    return AutomaskOutput(
        records=records_from_mask_data(decode_result(result), params.output_mode),
        image_size=size,
        response_bytes=int(resp.ByteSize()),
        crops=int(result.crops),
        prompts=int(result.prompts),
        encode_seconds=float(result.encode_seconds),
        server_seconds=float(result.total_seconds),
        params=params,
    )

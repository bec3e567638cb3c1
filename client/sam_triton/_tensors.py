"""numpy <-> KServe v2 ``ModelInferRequest`` / ``ModelInferResponse`` (sans-IO, no grpc calls).

Requests always use ``raw_input_contents`` (one memcpy per tensor, no per-element varints);
responses are decoded from ``raw_output_contents`` or, if a server sent typed ``contents``,
from those.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .errors import InvalidInputError, ServerError
from .proto import inference_pb2 as pb

# Triton datatype string <-> numpy dtype (little-endian, as on the wire).
_DTYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_BY_KIND: dict[tuple[str, int], str] = {(d.kind, d.itemsize): name for name, d in _DTYPES.items()}

# Which typed-contents field carries each datatype, for servers that do not send raw bytes.
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def triton_dtype(array: npt.NDArray[np.generic]) -> str:
    """Triton datatype name of a numpy array (object/bytes arrays are BYTES)."""
    if array.dtype.kind in ("O", "S", "U"):
        return "BYTES"
    name = _BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if name is None:
        raise InvalidInputError(f"dtype {array.dtype} has no Triton datatype")
    return name


def serialize_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """BYTES tensor wire format: each element as a 4-byte little-endian length + its bytes."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, count: int) -> npt.NDArray[np.generic]:
    out: npt.NDArray[np.generic] = np.empty(count, dtype=np.object_)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise ServerError(f"truncated BYTES tensor: element {i} of {count} missing")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        out[i] = raw[offset : offset + length]
        offset += length
    return out


def build_infer_request(
    model_name: str,
    inputs: Mapping[str, npt.NDArray[np.generic]],
    outputs: Sequence[str] = (),
    *,
    model_version: str = "",
    request_id: str = "",
) -> pb.ModelInferRequest:
    """One ``ModelInferRequest`` with every input as raw little-endian bytes."""
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version, id=request_id)
    for name, array in inputs.items():
        datatype = triton_dtype(array)
        tensor = request.inputs.add()
        tensor.name = name
        tensor.datatype = datatype
        tensor.shape.extend(int(d) for d in array.shape)
        if datatype == "BYTES":
            request.raw_input_contents.append(serialize_bytes(array))
        else:
            wire = _DTYPES[datatype]
            request.raw_input_contents.append(np.ascontiguousarray(array, dtype=wire).tobytes())
    for name in outputs:
        request.outputs.add().name = name
    return request


def _decode_typed(tensor: pb.ModelInferResponse.InferOutputTensor, count: int) -> npt.NDArray[np.generic]:
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise ServerError(f"output {tensor.name!r}: unsupported datatype {tensor.datatype}")
    values: Iterable[object] = getattr(tensor.contents, field)
    if tensor.datatype == "BYTES":
        arr: npt.NDArray[np.generic] = np.array(list(values), dtype=np.object_)
    else:
        arr = np.array(list(values), dtype=_DTYPES[tensor.datatype])
    if arr.size != count:
        raise ServerError(f"output {tensor.name!r}: {arr.size} values for shape {list(tensor.shape)}")
    return arr


def decode_infer_response(response: pb.ModelInferResponse) -> dict[str, npt.NDArray[np.generic]]:
    """All outputs of a response as numpy arrays keyed by name (copies: safe to keep)."""
    result: dict[str, npt.NDArray[np.generic]] = {}
    raw = response.raw_output_contents
    for i, tensor in enumerate(response.outputs):
        shape = tuple(int(d) for d in tensor.shape)
        count = int(np.prod(shape, dtype=np.int64))
        arr: npt.NDArray[np.generic]
        if i < len(raw):
            if tensor.datatype == "BYTES":
                arr = deserialize_bytes(raw[i], count)
            else:
                dtype = _DTYPES.get(tensor.datatype)
                if dtype is None:
                    raise ServerError(f"output {tensor.name!r}: unsupported datatype {tensor.datatype}")
                if len(raw[i]) != count * dtype.itemsize:
                    raise ServerError(
                        f"output {tensor.name!r}: {len(raw[i])} bytes "
                        f"for shape {list(shape)} {tensor.datatype}"
                    )
                arr = np.frombuffer(raw[i], dtype=dtype).copy()
        else:
            arr = _decode_typed(tensor, count)
        result[tensor.name] = arr.reshape(shape)
    return result


def require_output(
    outputs: Mapping[str, npt.NDArray[np.generic]], name: str, model: str
) -> npt.NDArray[np.generic]:
    """An output that must be present (a missing one means a misconfigured server)."""
    try:
        return outputs[name]
    except KeyError:
        raise ServerError(f"model {model!r} returned no {name!r} output (got {sorted(outputs)})") from None

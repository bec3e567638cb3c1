"""Input-data files for Triton's own ``perf_analyzer`` (``--input-data FILE.json``).

perf_analyzer's random inputs do not work for SAM: ``input_size`` must describe the image,
point coordinates must lie in the 1024 frame and labels must be valid, and the decoder's
inputs have variable dimensions (P prompts x N points). These files hold real requests built
with the SDK's own preprocessing (:mod:`sam_triton.tensors`), one entry per benchmark
image, in perf_analyzer's JSON format: every tensor as ``{"content": {"b64": ...}, "shape":
[...]}`` (raw little-endian bytes, shape without the batch dimension; ``-b 1``).

The decoder entries carry a seeded random embedding instead of a real one: the decoder's cost
does not depend on the embedding's values, and the file then needs no server or model.

Usage (the command lines are also written to ``DIR/README.txt``)::

    sam-triton bench --perf-analyzer-data DIR
    perf_analyzer -m sam_encoder -i grpc -u localhost:8001 --input-data DIR/sam_encoder.json \\
        --concurrency-range 1:4 --measurement-interval 10000
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sam_triton import tensors
from sam_triton.config import ModelNames
from sam_triton.prompts import encode_prompt, group_by_points
from sam_triton_common.contract import IMAGE_EMBEDDINGS
from sam_triton_common.transforms import EMBEDDING_SHAPE

from .images import BenchImage
from .scenarios import click_prompt

PA_COMMAND = (
    "perf_analyzer -m {model} -i grpc -u {url} --input-data {path} "
    "--concurrency-range 1:4 --measurement-interval 10000 --percentile 99"
)


def tensor_entry(array: npt.NDArray[Any]) -> dict[str, Any]:
    """One tensor for perf_analyzer: raw bytes (Triton's layout, BOOL = 1 byte) + shape.

    ``array`` includes the batch dimension of 1 that the SDK sends; perf_analyzer adds its
    own batch dimension from ``-b``, so the shape written here drops it.
    """
    if array.shape[0] != 1:
        raise ValueError(f"expected a batch of one, got shape {array.shape}")
    data = np.ascontiguousarray(array[0])
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    return {"content": {"b64": base64.b64encode(data.tobytes()).decode("ascii")}, "shape": list(data.shape)}


def _entries(tensors: Sequence[dict[str, npt.NDArray[Any]]]) -> dict[str, Any]:
    return {"data": [{name: tensor_entry(a) for name, a in t.items()} for t in tensors]}


def _prompt_inputs(index: int, image: BenchImage, multimask: bool) -> dict[str, npt.NDArray[Any]]:
    (batch,) = group_by_points([encode_prompt(click_prompt(index, image), image.size)], 1)
    return tensors.decoder_prompt_inputs(batch, multimask)


def model_requests(
    images: Sequence[BenchImage], multimask: bool = True, seed: int = 0, model: str | None = None
) -> dict[str, list[dict[str, npt.NDArray[Any]]]]:
    """Per model name (those of the served model ``model``, ``--model``; None: the unnamed
    one): the input tensors of one request per image."""
    rng = np.random.default_rng(seed)
    encoder, decoder, ensemble = [], [], []
    for i, image in enumerate(images):
        image_inputs, _ = tensors.encoder_inputs(image.rgb)
        prompt_inputs = _prompt_inputs(i, image, multimask)
        embedding = rng.standard_normal((1, *EMBEDDING_SHAPE)).astype(np.float32)
        encoder.append(image_inputs)
        decoder.append({IMAGE_EMBEDDINGS: embedding, **prompt_inputs})
        ensemble.append({**image_inputs, **prompt_inputs})
    names = ModelNames.of(model)
    return {names.encoder: encoder, names.decoder: decoder, names.ensemble: ensemble}


def write_perf_analyzer_data(
    directory: Path,
    images: Sequence[BenchImage],
    url: str = "localhost:8001",
    seed: int = 0,
    model: str | None = None,
) -> dict[str, Path]:
    """Write ``<model>.json`` for the encoder, decoder and ensemble plus ``README.txt``."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, requests in model_requests(images, seed=seed, model=model).items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(_entries(requests)))
        written[name] = path
    lines = [
        "# perf_analyzer input data written by `sam-triton bench --perf-analyzer-data`.",
        f"# {len(images)} request(s) per model, one per image: "
        + ", ".join(f"{im.name} ({im.size[0]}x{im.size[1]})" for im in images),
        "# perf_analyzer cycles through them; every tensor has an explicit shape (batch dim excluded).",
        "",
    ]
    lines += [PA_COMMAND.format(model=m, url=url, path=p) for m, p in written.items()]
    (directory / "README.txt").write_text("\n".join(lines) + "\n")
    return written

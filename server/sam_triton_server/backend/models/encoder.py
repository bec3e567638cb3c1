"""``sam_encoder`` for the python-onnxruntime target: a batch of images, one onnxruntime call."""

from __future__ import annotations

from typing import Any

import numpy as np
from sam_triton_common.contract import IMAGE, IMAGE_EMBEDDINGS, IMAGE_SIZE, INPUT_SIZE, SAM1, family_named

from sam_triton_server.backend.models._common import (
    Array,
    InvalidInput,
    OnnxModelBase,
    check_dtype,
    check_shape,
    split_batches,
)
from sam_triton_server.backend.ort import Session


def validate_encoder_inputs(image: Array, input_size: Array) -> None:
    """Raise InvalidInput unless image is uint8 [B,1024,1024,3] and input_size int32 [B,2] in 1..1024."""
    check_dtype("image", image, np.uint8)
    check_shape("image", image, (None, IMAGE_SIZE, IMAGE_SIZE, 3))
    check_dtype(INPUT_SIZE, input_size, np.int32)
    check_shape(INPUT_SIZE, input_size, (image.shape[0], 2))
    if (input_size < 1).any() or (input_size > IMAGE_SIZE).any():
        raise InvalidInput(
            f"input_size {input_size.tolist()} must be (height, width) of the resized image, "
            f"each in 1..{IMAGE_SIZE}"
        )


MAX_ORIGINAL_SIDE = 16384
"""The longest side of an original image a SAM 2 encoder accepts (it resizes it itself)."""


def validate_original_image(image: Array) -> None:
    """Raise InvalidInput unless image is uint8 [B, H, W, 3] with 1 <= H, W <= MAX_ORIGINAL_SIDE."""
    check_dtype("image", image, np.uint8)
    check_shape("image", image, (None, None, None, 3))
    if min(image.shape[1:3]) < 1 or max(image.shape[1:3]) > MAX_ORIGINAL_SIDE:
        raise InvalidInput(
            f"image of {image.shape[1]}x{image.shape[2]} pixels; each side must be 1..{MAX_ORIGINAL_SIDE}"
        )


class TritonPythonModel(OnnxModelBase):
    GRAPHS = {"encoder": "onnx_file"}
    encoder: Session

    def setup(self) -> None:
        self.family = family_named(self.params.get("family", SAM1.name))

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.family is not SAM1:
            return self.execute_each(requests, self._encode_original)
        responses: list[Any] = [None] * len(requests)
        valid: list[tuple[int, Array, Array]] = []
        for i, request in enumerate(requests):
            try:
                image, input_size = self.input(request, IMAGE), self.input(request, INPUT_SIZE)
                validate_encoder_inputs(image, input_size)
                valid.append((i, image, input_size))
            except InvalidInput as e:
                responses[i] = self.error_for(e)
        if valid:
            try:
                (embeddings,) = self.encoder.run(
                    [IMAGE_EMBEDDINGS],
                    {
                        IMAGE: np.concatenate([v[1] for v in valid]),
                        INPUT_SIZE: np.concatenate([v[2] for v in valid]),
                    },
                )
                pieces = split_batches([len(v[1]) for v in valid], embeddings)
                for (i, _, _), (piece,) in zip(valid, pieces, strict=True):
                    responses[i] = self.respond({IMAGE_EMBEDDINGS: piece})
            except Exception as e:  # never take the server down over one batch
                for i, _, _ in valid:
                    responses[i] = self.error_for(e)
        return responses

    def _encode_original(self, request: Any) -> Any:
        """SAM 2: one request's original image(s), resized inside the graph (requests of other
        sizes cannot share one call), every feature map back."""
        image = self.input(request, IMAGE)
        validate_original_image(image)
        outputs = self.family.encoder_outputs
        return self.respond(dict(zip(outputs, self.encoder.run(list(outputs), {IMAGE: image}), strict=True)))

"""``sam_automask``: SamAutomaticMaskGenerator next to the model, RLE records back.

One request carries the original image (UINT8 [1, H, W, 3]) and serialized
``AutomaskParams``; the answer is one serialized ``AutomaskResult``. Crops are encoded through
``sam_encoder`` (BLS, batched), prompts are decoded in this process with the decoder's own
ONNX file (``onnx_file`` points at sam_decoder's), and filtering, stability scores, NMS and
small-region clean-up run here too (:mod:`sam_triton_server.backend.automask` explains the split).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from sam_triton_common.amg import AmgParams
from sam_triton_common.amg.wire import decode_params
from sam_triton_common.contract import AUTOMASK_PARAMS, AUTOMASK_RESULT, ENCODER_MODEL, IMAGE
from sam_triton_common.proto import automask_pb2

from sam_triton_server.backend.automask import AutomaskCancelled, AutomaskLimits, run_automask, warm_up
from sam_triton_server.backend.metrics import AutomaskMetrics
from sam_triton_server.backend.models._common import Array, InvalidInput, OnnxModelBase, int_parameter
from sam_triton_server.backend.ort import MemoryReleasing, Session
from sam_triton_server.backend.prompt_decoder import PromptDecoder


class TritonPythonModel(OnnxModelBase):
    """Runs sam_decoder's split pair (``onnx_file`` is its prompt_decoder graph); one
    instance, requests one at a time."""

    GRAPHS = {"image_features": "image_features_file", "prompt_graph": "onnx_file"}
    image_features: Session
    prompt_graph: Session

    def setup(self) -> None:
        defaults = asdict(AutomaskLimits())
        self.limits = AutomaskLimits(
            **{key: int_parameter(self.params, key, default) for key, default in defaults.items()}
        )
        self.encoder_model = self.params.get("encoder_model", ENCODER_MODEL)
        self.metrics = AutomaskMetrics(self.pb, self.name)
        self.setup_family()
        self.release_memory()

    def setup_family(self) -> None:
        """What the model family needs beside the common set-up: SAM 1's split decoder."""
        self.decoder = PromptDecoder(self.image_features, self.prompt_graph)
        self.encoder_max_batch = int_parameter(self.params, "encoder_max_batch", 8)
        warm_up(self.decoder)

    def release_memory(self) -> None:
        """Hand back what the decoder's runtime kept from its largest batches: one small
        decode through :class:`MemoryReleasing` sessions. A request's batches of
        ``points_per_batch`` prompts need ~1.2 GB on vit_b; kept between requests, they made
        this stub 3.3 GB resident (BENCHMARKS.md "Memory per replica")."""
        warm_up(PromptDecoder(MemoryReleasing(self.image_features), MemoryReleasing(self.prompt_graph)), 1)

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.execute_each(requests, self._handle_cancellable)

    def _handle_cancellable(self, request: Any) -> Any:
        """A request whose client cancelled it, or hung up (Ctrl-C), stops at its next batch."""
        try:
            return self._handle(request)
        except AutomaskCancelled as stopped:
            message = f"{self.name}: {stopped}"
            self.logger.info(message)  # the operator sees why a job ended without an answer
            return self._error(message, "CANCELLED")
        finally:
            self.release_memory()

    def _handle(self, request: Any) -> Any:
        started = time.monotonic()
        image = self.input(request, IMAGE)
        raw_params = self.input(request, AUTOMASK_PARAMS).reshape(-1)
        if image.ndim != 4 or image.shape[0] != 1:
            raise InvalidInput(f"image has shape {list(image.shape)}; expected [1, height, width, 3]")
        if raw_params.size != 1:
            raise InvalidInput(
                f"params must hold exactly one serialized AutomaskParams, got {raw_params.size}"
            )
        params = decode_params(bytes(raw_params[0]))
        result = self.run(np.ascontiguousarray(image[0]), params, request.is_cancelled)
        payload = np.array([[result.SerializeToString()]], dtype=np.object_)
        self.metrics.ran(time.monotonic() - started, len(result.records))
        return self.respond({AUTOMASK_RESULT: payload})

    def run(
        self, image: Array, params: AmgParams, cancelled: Callable[[], bool]
    ) -> automask_pb2.AutomaskResult:
        """One image's masks, by this model family's generator."""
        return run_automask(
            image,
            params,
            encode_batch=self._encode_batch,
            decoder=self.decoder,
            encoder_max_batch=self.encoder_max_batch,
            limits=self.limits,
            cancelled=cancelled,
        )

    def _encode_batch(self, images: Array, sizes: Array) -> Array:
        """All crops of a batch in one BLS request: one dynamic batch on the encoder."""
        embeddings: Array = self.encode_via_bls(self.encoder_model, images, sizes)
        return embeddings

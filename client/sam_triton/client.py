"""Blocking gRPC client: :class:`SamClient`.

All request building, validation and decoding is in :mod:`sam_triton._core`; this module only
owns a ``grpc.Channel`` and performs the calls the core asks for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from sam_triton_common.amg import AmgParams

from . import _core, errors
from ._automask_core import AutomaskOutput, GeneratorArguments, automask_op
from ._core import Attempts, Call, Op
from .config import ClientConfig, ClientConstruction
from .images import ImageFormat, ImageInput
from .prompts import Prompt
from .proto.inference_pb2_grpc import GRPCInferenceServiceStub
from .results import ImageEmbedding, ModelMetadata, Prediction

if TYPE_CHECKING:
    from typing_extensions import Self


T = TypeVar("T")
X = TypeVar("X")


def open_channel(config: ClientConfig) -> grpc.Channel:
    options = config.grpc_options()
    compression = config.grpc_compression()
    if config.tls is not None:
        return grpc.secure_channel(config.url, config.tls.credentials(), options, compression)
    return grpc.insecure_channel(config.url, options, compression)


class SamClient(ClientConstruction):
    """Synchronous client for a sam-triton server (thread-safe: share one across threads).

    Example::

        with SamClient("localhost:8001") as client:
            emb = client.embed("photo.jpg")
            pred = client.predict(emb, Prompt(point_coords=[[500, 375]], point_labels=[1]))
            best = pred.masks[pred.best()]

    Keyword options (see :func:`sam_triton.config.make_config`): ``timeout`` (seconds per SDK
    call, retries included), ``retries``/``backoff`` (UNAVAILABLE only), ``tls``
    (:class:`~sam_triton.TlsConfig`, mTLS with a client cert/key), ``compression``
    (``"gzip"``/``"deflate"``), ``max_message_bytes``, ``keepalive``, ``model`` (which served
    model, on a server that serves several: ``sam-triton export --name NAME``), ``models``,
    ``max_prompts_per_request``, ``max_prompts``, ``max_pixels``, ``metadata``, ``channel_options``,
    ``api_key`` (sent on every call; default: the ``SAM_TRITON_API_KEY`` environment variable).
    """

    def _setup(self, config: ClientConfig) -> None:
        self.config = config
        self._channel = open_channel(config)
        self._stub = GRPCInferenceServiceStub(self._channel)
        self._metadata = config.call_metadata()

    # -- plumbing ---------------------------------------------------------------------------

    def _call_metadata(self, call: Call) -> tuple[tuple[str, str], ...] | None:
        return (self._metadata + call.metadata) or None

    def _invoke(self, call: Call, attempts: Attempts) -> Any:
        method = getattr(self._stub, call.method)
        while True:
            try:
                request, timeout = attempts.prepare(call)
                response = method(request, timeout=timeout, metadata=self._call_metadata(call))
            except grpc.RpcError as exc:
                _core.observe(self.config, call, None)
                time.sleep(attempts.on_error(exc, call.context))
            else:
                _core.observe(self.config, call, response)
                return response

    def _execute(self, calls: Sequence[Call], attempts: Attempts) -> list[Any]:
        if len(calls) == 1:
            return [self._invoke(calls[0], attempts)]
        # Independent calls (prompt groups) go out together as futures: no threads needed.
        futures = []
        for c in calls:
            request, timeout = attempts.prepare(c)
            method = getattr(self._stub, c.method)
            futures.append(method.future(request, timeout=timeout, metadata=self._call_metadata(c)))
        try:
            results = []
            for call, future in zip(calls, futures, strict=True):
                try:
                    results.append(future.result())
                except grpc.RpcError as exc:
                    _core.observe(self.config, call, None)
                    time.sleep(attempts.on_error(exc, call.context))
                    results.append(self._invoke(call, attempts))
                else:
                    _core.observe(self.config, call, results[-1])
            return results
        finally:
            for future in futures:
                future.cancel()  # no-op for finished ones; stops the rest after an error

    def _run(self, op: Op[T], priority: int | None = None) -> T:
        attempts = Attempts(self.config, priority)
        return _core.run_sync(op, lambda calls: self._execute(calls, attempts))

    # -- health -----------------------------------------------------------------------------

    def server_live(self) -> bool:
        return self._run(_core.server_live_op())

    def server_ready(self) -> bool:
        return self._run(_core.server_ready_op())

    def model_ready(self, name: str | None = None, version: str = "") -> bool:
        """Whether a model (default: the decoder) is loaded and ready."""
        return self._run(_core.model_ready_op(name or self.config.models.decoder, version))

    def model_metadata(self, name: str | None = None, version: str = "") -> ModelMetadata:
        return self._run(_core.model_metadata_op(name or self.config.models.decoder, version))

    def wait_until_ready(self, timeout: float = 60.0, models: Iterable[str] | None = None) -> None:
        """Block until the server and the SAM models (default: encoder, decoder, session) are ready."""
        names = list(models) if models is not None else _core.default_models(self.config)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._run(_core.all_ready_op(names)):
                    return
                error: errors.SamTritonError = errors.ModelNotReadyError(f"models {names} are not ready")
            except errors.SamTritonError as exc:
                error = exc
            if time.monotonic() >= deadline:
                raise error
            time.sleep(0.2)

    # -- SAM --------------------------------------------------------------------------------

    def embed(
        self,
        image: ImageInput,
        image_format: ImageFormat = "RGB",
        *,
        session_id: str | None = None,
        priority: int | None = None,
    ) -> ImageEmbedding:
        """Preprocess and encode one image (``SamPredictor.set_image``'s work).

        By default (``server_embeddings=True``) the server keeps the embedding under the
        image's content id: an image it already holds is not uploaded again, and the returned
        handle makes every :meth:`predict` send the prompts only. ``session_id`` names the
        embedding yourself instead (the image is then always uploaded and encoded under it).
        With ``server_embeddings=False`` the embedding comes back in the handle.
        ``priority`` (a :class:`~sam_triton.Priority` level) overrides the default class of
        every request of this call.
        """
        return self._run(_core.embed_op(self.config, image, image_format, session_id), priority)

    def fetch_embedding(self, embedding: ImageEmbedding) -> npt.NDArray[np.float32]:
        """The (256, 64, 64) float32 embedding of a handle, downloaded when the server holds it."""
        return self._run(_core.fetch_embedding_op(self.config, embedding))

    def has_embedding(self, session_id: str) -> bool:
        """Whether the server currently holds an embedding under ``session_id``."""
        return self._run(_core.session_lookup_op(self.config, session_id))

    def predict(
        self,
        embedding: ImageEmbedding,
        prompts: Prompt | Sequence[Prompt],
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        priority: int | None = None,
        low_res_logits: bool = False,
    ) -> Prediction | list[Prediction]:
        """Masks for one prompt (-> Prediction) or several (-> list, same order).

        With compact answers (the default on server-held embeddings) ``low_res_logits=True``
        also downloads each prediction's (K, 256, 256) logits; otherwise they stay on the
        server and ``Prediction.mask_input()`` refines a mask by naming it.
        """
        return self._run(
            _core.predict_op(
                self.config, embedding, prompts, multimask_output, return_logits, low_res_logits
            ),
            priority,
        )

    def segment(
        self,
        image: ImageInput,
        prompts: Prompt | Sequence[Prompt],
        image_format: ImageFormat = "RGB",
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        priority: int | None = None,
    ) -> Prediction | list[Prediction]:
        """Image + prompts -> masks in one round trip through the ``sam`` ensemble."""
        return self._run(
            _core.segment_op(self.config, image, prompts, image_format, multimask_output, return_logits),
            priority,
        )

    def automask(
        self,
        image: ImageInput,
        params: AmgParams | GeneratorArguments | None = None,
        image_format: ImageFormat = "RGB",
        *,
        model: str | None = None,
        priority: int | None = None,
    ) -> AutomaskOutput:
        """Automatic masks of one image (``SamAutomaticMaskGenerator.generate``, or
        ``SAM2AutomaticMaskGenerator``'s for a SAM 2 model), computed next to the model by
        ``sam_automask``: the records (``params.output_mode``) plus what the call cost.
        ``params``: an :class:`AmgParams`, or some of its fields by name (a dict), the served
        family's reference defaults filling in the rest (None: all of them); ``model`` defaults to
        ``models.automask``. A full run takes far longer than one click: give the client a
        ``timeout`` to match (:class:`~sam_triton.RemoteAutomaticMaskGenerator` uses 600 s)."""
        return self._run(automask_op(self.config, image, params, image_format, model), priority)

    def map(self, fn: Callable[[X], T], items: Iterable[X], max_workers: int = 4) -> list[T]:
        """``[fn(x) for x in items]`` on a thread pool, in order (many images concurrently)."""
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sam-triton") as pool:
            return list(pool.map(fn, items))

    def embed_many(
        self, images: Iterable[ImageInput], image_format: ImageFormat = "RGB", max_workers: int = 4
    ) -> list[ImageEmbedding]:
        """Embed several images concurrently (Triton batches them on the server)."""
        return self.map(lambda img: self.embed(img, image_format), images, max_workers)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SamClient({self.config.url!r})"

"""asyncio client: :class:`AsyncSamClient`, the same operations as :class:`SamClient` over grpc.aio.

It drives the same sans-IO operations from :mod:`sam_triton._core`; only the transport and
the sleeping differ. Independent calls of one operation (prompt groups) run concurrently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio
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


def open_aio_channel(config: ClientConfig) -> grpc.aio.Channel:
    options = config.grpc_options()
    compression = config.grpc_compression()
    if config.tls is not None:
        return grpc.aio.secure_channel(config.url, config.tls.credentials(), options, compression)
    return grpc.aio.insecure_channel(config.url, options, compression)


class AsyncSamClient(ClientConstruction):
    """asyncio client; same arguments and methods as :class:`~sam_triton.SamClient`, awaitable.

    Example::

        async with AsyncSamClient("localhost:8001") as client:
            embeddings = await client.embed_many(images)
            preds = await asyncio.gather(*(client.predict(e, prompt) for e in embeddings))

    The channel opens on first use inside the running event loop (grpc.aio channels belong to
    one loop), so the client may be constructed anywhere.
    """

    def _setup(self, config: ClientConfig) -> None:
        self.config = config
        self._channel: grpc.aio.Channel | None = None
        self._stub: GRPCInferenceServiceStub | None = None
        self._metadata = config.call_metadata()

    # -- plumbing ---------------------------------------------------------------------------

    def _get_stub(self) -> GRPCInferenceServiceStub:
        if self._stub is None:
            self._channel = open_aio_channel(self.config)
            self._stub = GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def _invoke(self, call: Call, attempts: Attempts) -> Any:
        method = getattr(self._get_stub(), call.method)
        while True:
            try:
                request, timeout = attempts.prepare(call)
                metadata = (self._metadata + call.metadata) or None
                response = await method(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:  # grpc.aio.AioRpcError derives from it
                _core.observe(self.config, call, None)
                await asyncio.sleep(attempts.on_error(exc, call.context))
            else:
                _core.observe(self.config, call, response)
                return response

    async def _execute(self, calls: Sequence[Call], attempts: Attempts) -> list[Any]:
        return list(await asyncio.gather(*(self._invoke(c, attempts) for c in calls)))

    async def _run(self, op: Op[T], priority: int | None = None) -> T:
        attempts = Attempts(self.config, priority)
        return await _core.run_async(op, lambda calls: self._execute(calls, attempts))

    # -- health -----------------------------------------------------------------------------

    async def server_live(self) -> bool:
        return await self._run(_core.server_live_op())

    async def server_ready(self) -> bool:
        return await self._run(_core.server_ready_op())

    async def model_ready(self, name: str | None = None, version: str = "") -> bool:
        return await self._run(_core.model_ready_op(name or self.config.models.decoder, version))

    async def model_metadata(self, name: str | None = None, version: str = "") -> ModelMetadata:
        return await self._run(_core.model_metadata_op(name or self.config.models.decoder, version))

    async def wait_until_ready(self, timeout: float = 60.0, models: Iterable[str] | None = None) -> None:
        """Wait until the server and the SAM models (default: encoder, decoder, session) are ready."""
        names = list(models) if models is not None else _core.default_models(self.config)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self._run(_core.all_ready_op(names)):
                    return
                error: errors.SamTritonError = errors.ModelNotReadyError(f"models {names} are not ready")
            except errors.SamTritonError as exc:
                error = exc
            if time.monotonic() >= deadline:
                raise error
            await asyncio.sleep(0.2)

    # -- SAM --------------------------------------------------------------------------------

    async def embed(
        self,
        image: ImageInput,
        image_format: ImageFormat = "RGB",
        *,
        session_id: str | None = None,
        priority: int | None = None,
    ) -> ImageEmbedding:
        """See :meth:`SamClient.embed` (server-held by default; only prompts travel per predict)."""
        return await self._run(_core.embed_op(self.config, image, image_format, session_id), priority)

    async def fetch_embedding(self, embedding: ImageEmbedding) -> npt.NDArray[np.float32]:
        """The (256, 64, 64) float32 embedding of a handle, downloaded when the server holds it."""
        return await self._run(_core.fetch_embedding_op(self.config, embedding))

    async def has_embedding(self, session_id: str) -> bool:
        """Whether the server currently holds an embedding under ``session_id``."""
        return await self._run(_core.session_lookup_op(self.config, session_id))

    async def predict(
        self,
        embedding: ImageEmbedding,
        prompts: Prompt | Sequence[Prompt],
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        priority: int | None = None,
        low_res_logits: bool = False,
    ) -> Prediction | list[Prediction]:
        """See :meth:`SamClient.predict`. Cancelling the awaiting task cancels the RPC."""
        return await self._run(
            _core.predict_op(
                self.config, embedding, prompts, multimask_output, return_logits, low_res_logits
            ),
            priority,
        )

    async def segment(
        self,
        image: ImageInput,
        prompts: Prompt | Sequence[Prompt],
        image_format: ImageFormat = "RGB",
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        priority: int | None = None,
    ) -> Prediction | list[Prediction]:
        return await self._run(
            _core.segment_op(self.config, image, prompts, image_format, multimask_output, return_logits),
            priority,
        )

    async def automask(
        self,
        image: ImageInput,
        params: AmgParams | GeneratorArguments | None = None,
        image_format: ImageFormat = "RGB",
        *,
        model: str | None = None,
        priority: int | None = None,
    ) -> AutomaskOutput:
        """:meth:`SamClient.automask <sam_triton.SamClient.automask>`, awaitable."""
        return await self._run(automask_op(self.config, image, params, image_format, model), priority)

    async def map(
        self, fn: Callable[[X], Awaitable[T]], items: Iterable[X], concurrency: int = 16
    ) -> list[T]:
        """``[await fn(x) for x in items]`` with at most ``concurrency`` in flight, in order."""
        gate = asyncio.Semaphore(concurrency)

        async def one(item: X) -> T:
            async with gate:
                return await fn(item)

        return list(await asyncio.gather(*(one(x) for x in items)))

    async def embed_many(
        self, images: Iterable[ImageInput], image_format: ImageFormat = "RGB", concurrency: int = 16
    ) -> list[ImageEmbedding]:
        """Embed several images concurrently (Triton batches them on the server)."""
        return await self.map(lambda img: self.embed(img, image_format), images, concurrency)

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncSamClient({self.config.url!r})"

"""Client configuration: connection, TLS, API key, keepalive, retries, limits and model names.

Plain dataclasses shared by the sync and asyncio clients; turning them into gRPC channel
arguments happens here too, so both clients build identical channels.
"""

from __future__ import annotations

import enum
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

import grpc
from sam_triton_common import contract

from .errors import ModelNotReadyError, SamTritonError, ServerOverloadedError, ServerUnavailableError
from .uploads import ImageUpload

Compression = Literal["gzip", "deflate"]

RpcObserver = Callable[[str, int, int], None]
"""Told of every RPC attempt: (method, request bytes, response bytes; 0 when it failed).

Sizes are the protobuf payloads (``ByteSize``), before compression and without gRPC framing
or headers; a load test sums them into bytes on the wire."""

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""gRPC's default receive limit (4 MiB) is smaller than one embedding (4 MiB + framing) and
than a multi-prompt answer (0.8 MiB per prompt), so the SDK raises it on both ends."""


def _read(value: bytes | str | os.PathLike[str] | None) -> bytes | None:
    """PEM given as bytes, or as a path to read."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the gRPC channel; with ``certificate_chain`` + ``private_key`` it is mutual TLS.

    PEM values are bytes or file paths. ``root_certificates=None`` uses the system trust store.
    ``server_name_override`` checks the server certificate against that name instead of the host
    in the URL (for IP addresses or test certificates; never needed with proper DNS names).
    """

    root_certificates: bytes | str | os.PathLike[str] | None = None
    private_key: bytes | str | os.PathLike[str] | None = None
    certificate_chain: bytes | str | os.PathLike[str] | None = None
    server_name_override: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("mutual TLS needs both private_key and certificate_chain")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_certificates),
            private_key=_read(self.private_key),
            certificate_chain=_read(self.certificate_chain),
        )


@dataclass(frozen=True)
class KeepAliveConfig:
    """HTTP/2 keepalive pings (same knobs and defaults as tritonclient's KeepAliveOptions)."""

    time_ms: int = 2**31 - 1
    timeout_ms: int = 20_000
    permit_without_calls: bool = False
    max_pings_without_data: int = 2


class Priority(enum.IntEnum):
    """Triton priority levels of the served models (1 is served first; docs/operating/many-users.md).

    Each model's queue defaults to its usual class: ``sam_session`` and ``sam_decoder``
    INTERACTIVE (clicks), ``sam_encoder`` FOREGROUND, ``sam_automask`` BATCH; the SDK sends
    a ``sam_session`` embed as FOREGROUND. ``priority=`` on a call overrides all of them.
    """

    INTERACTIVE = 1
    FOREGROUND = 2
    BATCH = 3


_RETRIED = (ServerUnavailableError, ModelNotReadyError, ServerOverloadedError)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, for UNAVAILABLE, ModelNotReadyError and
    ServerOverloadedError only.

    UNAVAILABLE means the request never reached a model (server starting, stopping,
    restarting, network blip), a model not loaded (loading, or unloading on a stopping server)
    computed nothing, and an overloaded server refused the request before computing anything,
    so repeating any of them is safe; every other status is an answer and is raised at once. A
    retry is only made when its backoff ends before the call's deadline: a refused request then
    fails fast.
    """

    retries: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay(self, error: SamTritonError, attempt: int, remaining: float | None) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up and raise."""
        if type(error) not in _RETRIED or attempt >= self.retries:
            return None
        base = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        wait = base * (1.0 + self.jitter * (2.0 * random.random() - 1.0))
        if remaining is not None and wait >= remaining:
            return None  # no time left for another attempt: report the real cause now
        return max(0.0, wait)


@dataclass(frozen=True)
class ModelNames:
    """Names of the served models (change them only for a renamed repository).

    :meth:`of` gives those of one model in a repository of several (``model="NAME"``)."""

    encoder: str = contract.ENCODER_MODEL
    decoder: str = contract.DECODER_MODEL
    ensemble: str = contract.ENSEMBLE_MODEL
    session: str = contract.SESSION_MODEL
    automask: str = contract.AUTOMASK_MODEL
    video: str = contract.VIDEO_MODEL
    version: str = ""
    model: str | None = None
    """The repository model these names belong to (``sam-triton export --name``), or None."""

    @classmethod
    def of(cls, model: str | None) -> ModelNames:
        """The Triton names of the model exported as ``model`` (None: the unnamed one)."""
        if model is None:
            return cls()
        names = {role: contract.served_name(model, role) for role in contract.MODEL_ROLES}
        return cls(
            encoder=names[contract.ENCODER_MODEL],
            decoder=names[contract.DECODER_MODEL],
            ensemble=names[contract.ENSEMBLE_MODEL],
            session=names[contract.SESSION_MODEL],
            automask=names[contract.AUTOMASK_MODEL],
            video=names[contract.VIDEO_MODEL],
            model=model,
        )


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs; built from :class:`~sam_triton.SamClient`'s keyword arguments.

    Attributes:
        url: ``host:port`` of Triton's gRPC endpoint.
        timeout: deadline in seconds for one SDK call, retries and backoff included (None: none).
        retry: when and how to retry.
        tls: TLS settings, or None for a plaintext channel.
        compression: request compression, or None.
        max_message_bytes: send/receive limit; larger requests fail before being sent.
        keepalive: HTTP/2 keepalive settings.
        models: served model names.
        max_prompts_per_request: prompts per decoder call (the server's ``max_prompts``, 64 by
            default); more are split into several concurrent calls.
        max_prompts: most prompts one SDK call accepts; more is an InvalidInputError.
        max_pixels: images above this many pixels are rejected (None: no limit).
        metadata: extra gRPC headers for every call (auth tokens, routing keys).
        api_key: the server's API key, sent on every call (None: none); never printed.
        channel_options: extra raw gRPC channel arguments, appended last.
        server_embeddings: ``embed`` leaves the embedding on the server (``sam_session``) and
            returns a handle naming it, so each ``predict`` uploads the prompts only (default).
            False: the embedding comes back and travels with every ``predict`` (stateless).
        rpc_observer: called after every RPC attempt with its payload sizes (None: nothing
            is measured, and nothing is paid for it).
        compact_answers: a click on a server-held embedding gets its masks made on the server
            and sent run-length encoded or bit-packed (a few KB instead of 256 KiB of logits
            per mask), the same bits as masks made here; low-res logits only when asked for,
            and the server keeps them for a refinement that names them (default). False:
            the logits come back and the masks are made here (the wire format before).
    """

    url: str = "localhost:8001"
    timeout: float | None = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: TlsConfig | None = None
    compression: Compression | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    keepalive: KeepAliveConfig = field(default_factory=KeepAliveConfig)
    models: ModelNames = field(default_factory=ModelNames)
    max_prompts_per_request: int = 64
    max_prompts: int = 4096
    max_pixels: int | None = 8192 * 8192
    metadata: tuple[tuple[str, str], ...] = ()
    channel_options: tuple[tuple[str, Any], ...] = ()
    server_embeddings: bool = True
    rpc_observer: RpcObserver | None = None
    compact_answers: bool = True
    older_sessions: set[str] = field(default_factory=set, compare=False, repr=False)
    """Filled by the client: session models that refused compact answers' tensors (exported
    before them); their clicks are asked the way they were before."""
    families: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Filled by the client, not by callers: the model family each encoder model reported
    (its ModelMetadata outputs, ``contract.family_of_encoder``), asked once per model."""
    api_key: str | None = field(default=None, repr=False)
    image_upload: ImageUpload = "auto"
    """How an embed on a server-held embedding uploads its image (:mod:`sam_triton.uploads`):
    "auto" sends the caller's JPEG/PNG/WebP file (path, bytes or a PIL image opened from one),
    or an array as a lossless PNG, when that is fewer bytes than the pixel tensor; "raw"
    always sends the pixel tensor. Same pixels, masks and content id either way."""

    def __post_init__(self) -> None:
        if not self.url or self.url.startswith(("http://", "https://")):
            raise ValueError(
                f"url must be host:port of the gRPC endpoint (e.g. localhost:8001), got {self.url!r}"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be positive or None")
        if self.max_prompts_per_request < 1:
            raise ValueError("max_prompts_per_request must be >= 1")
        if self.max_prompts < 1:
            raise ValueError("max_prompts must be >= 1")
        if self.image_upload not in ("auto", "raw"):
            raise ValueError(f"image_upload must be 'auto' or 'raw', got {self.image_upload!r}")
        if self.compression not in (None, "gzip", "deflate"):
            raise ValueError(f"compression must be None, 'gzip' or 'deflate', got {self.compression!r}")

    def grpc_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", self.keepalive.time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive.timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive.permit_without_calls)),
            ("grpc.http2.max_pings_without_data", self.keepalive.max_pings_without_data),
            # Retries are ours (with the SDK's deadline budget); gRPC's own would double them.
            ("grpc.enable_retries", 0),
        ]
        if self.tls is not None and self.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name_override))
        options.extend(self.channel_options)
        return options

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """The headers every call carries: the API key, then ``metadata``."""
        key = ((contract.API_KEY_METADATA, self.api_key),) if self.api_key is not None else ()
        return key + self.metadata

    def grpc_compression(self) -> grpc.Compression | None:
        if self.compression is None:
            return None
        return grpc.Compression.Gzip if self.compression == "gzip" else grpc.Compression.Deflate


class ClientOptions(TypedDict, total=False):
    """Keyword arguments accepted by both clients and by RemoteSamPredictor (see make_config)."""

    timeout: float | None
    retries: int
    backoff: float
    max_backoff: float
    tls: TlsConfig | None
    compression: Compression | None
    max_message_bytes: int
    keepalive: KeepAliveConfig | None
    model: str | None
    models: ModelNames | None
    max_prompts_per_request: int
    max_prompts: int
    max_pixels: int | None
    metadata: dict[str, str] | None
    channel_options: dict[str, Any] | None
    server_embeddings: bool
    rpc_observer: RpcObserver | None
    image_upload: ImageUpload
    api_key: str | None
    compact_answers: bool


def make_config(
    url: str = "localhost:8001",
    *,
    timeout: float | None = 60.0,
    retries: int = 3,
    backoff: float = 0.1,
    max_backoff: float = 5.0,
    tls: TlsConfig | None = None,
    compression: Compression | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    keepalive: KeepAliveConfig | None = None,
    model: str | None = None,
    models: ModelNames | None = None,
    max_prompts_per_request: int = 64,
    max_prompts: int = 4096,
    max_pixels: int | None = 8192 * 8192,
    metadata: dict[str, str] | None = None,
    channel_options: dict[str, Any] | None = None,
    server_embeddings: bool = True,
    rpc_observer: RpcObserver | None = None,
    image_upload: ImageUpload = "auto",
    api_key: str | None = None,
    compact_answers: bool = True,
) -> ClientConfig:
    """The keyword arguments of both clients, as one :class:`ClientConfig`.

    ``retries``/``backoff``/``max_backoff`` configure :class:`RetryPolicy` (UNAVAILABLE only);
    ``metadata`` keys must be lower-case (a gRPC rule). ``api_key`` defaults to the
    ``SAM_TRITON_API_KEY`` environment variable. ``model`` chooses one model of a server that
    serves several (``sam-triton export --name NAME``; default: the unnamed one).
    """
    if model is not None and models is not None:
        raise ValueError("give model= (a served model's name) or models= (its Triton names), not both")
    if model is not None:
        try:
            models = ModelNames.of(model)
        except ValueError as e:
            raise ValueError(f"model={model!r}: {e}") from None
    return ClientConfig(
        url=url,
        timeout=timeout,
        retry=RetryPolicy(retries=retries, initial_backoff=backoff, max_backoff=max_backoff),
        tls=tls,
        compression=compression,
        max_message_bytes=max_message_bytes,
        keepalive=keepalive or KeepAliveConfig(),
        models=models or ModelNames(),
        max_prompts_per_request=max_prompts_per_request,
        max_prompts=max_prompts,
        max_pixels=max_pixels,
        metadata=tuple((metadata or {}).items()),
        channel_options=tuple((channel_options or {}).items()),
        server_embeddings=server_embeddings,
        rpc_observer=rpc_observer,
        image_upload=image_upload,
        compact_answers=compact_answers,
        api_key=api_key if api_key is not None else os.environ.get(contract.API_KEY_ENV) or None,
    )


class ClientConstruction:
    """How SamClient and AsyncSamClient are built: from a URL and options, or a ready config.

    Each subclass only says what ``_setup`` does with the config (open a channel now, or on
    first use inside the event loop).
    """

    config: ClientConfig

    def __init__(self, url: str = "localhost:8001", **options: Unpack[ClientOptions]) -> None:
        self._setup(make_config(url, **options))

    @classmethod
    def from_config(cls, config: ClientConfig) -> Self:
        client = cls.__new__(cls)
        client._setup(config)
        return client

    def _setup(self, config: ClientConfig) -> None:
        raise NotImplementedError

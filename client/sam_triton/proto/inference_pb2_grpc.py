"""Triton's ``inference.GRPCInferenceService``: client stub and server registration (hand-written).

The messages in inference_pb2 live in the protobuf package ``sam_triton.inference`` so that
they never clash with tritonclient's ``inference`` messages in one process (see
inference.proto). A generated stub would then call ``/sam_triton.inference.GRPCInferenceService``,
a service Triton does not have; this module uses Triton's fixed method paths with our messages,
which are wire-identical to KServe's (the binary format carries field numbers, not names).
Only the calls the SDK makes; the stub works on a ``grpc.Channel`` and a ``grpc.aio.Channel``.
"""

from __future__ import annotations

from typing import Any

import grpc

from sam_triton.proto import inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
"""The KServe v2 service's full name: the first part of every method path Triton routes by."""

METHODS: dict[str, tuple[type[Any], type[Any]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
}
"""Each RPC's request and response message."""

STREAMS: dict[str, tuple[type[Any], type[Any]]] = {
    "ModelStreamInfer": (pb.ModelInferRequest, pb.ModelStreamInferResponse),
}
"""Each bidirectional stream's request and answer message (``sam_video``'s sessions)."""


def method_path(method: str) -> str:
    return f"/{SERVICE}/{method}"


class GRPCInferenceServiceStub:
    """One multi-callable per RPC (unary, or a stream: ``STREAMS``), named as in the KServe v2
    protocol."""

    ServerLive: Any
    ServerReady: Any
    ModelReady: Any
    ServerMetadata: Any
    ModelMetadata: Any
    ModelInfer: Any
    RepositoryIndex: Any
    ModelStreamInfer: Any

    def __init__(self, channel: Any) -> None:
        for name, (request, response) in METHODS.items():
            callable_ = channel.unary_unary(
                method_path(name),
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
                _registered_method=True,
            )
            setattr(self, name, callable_)
        for name, (request, response) in STREAMS.items():
            stream = channel.stream_stream(
                method_path(name),
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
                _registered_method=True,
            )
            setattr(self, name, stream)


class GRPCInferenceServiceServicer:
    """Base of an in-process implementation (test doubles of Triton): define the RPCs you
    answer as ``Name(request, context)``; the others answer UNIMPLEMENTED."""


def add_GRPCInferenceServiceServicer_to_server(servicer: GRPCInferenceServiceServicer, server: Any) -> None:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in METHODS.items()
        if hasattr(servicer, name)
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

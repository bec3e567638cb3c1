"""The client stub of Triton's ``inference.GRPCInferenceService`` (hand-written, not generated).

The messages in inference_pb2 live in the protobuf package ``sam_triton.inference`` so that
they never clash with tritonclient's ``inference`` messages in one process (see
inference.proto). A generated stub would then call ``/sam_triton.inference.GRPCInferenceService``,
a service Triton does not have; this one calls Triton's fixed method paths with our messages,
which are wire-identical to KServe's (the binary format carries field numbers, not names).
Usable with a ``grpc.Channel`` and a ``grpc.aio.Channel`` alike; only the calls the SDK makes.
"""

from __future__ import annotations

from typing import Any

from sam_triton.proto import inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
"""The KServe v2 service's full name: the first part of every method path Triton routes by."""


def method_path(method: str) -> str:
    return f"/{SERVICE}/{method}"


def _unary(channel: Any, method: str, request: type[Any], response: type[Any]) -> Any:
    return channel.unary_unary(
        method_path(method),
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
        _registered_method=True,
    )


class GRPCInferenceServiceStub:
    """One unary multi-callable per RPC, named as in the KServe v2 protocol."""

    def __init__(self, channel: Any) -> None:
        self.ServerLive = _unary(channel, "ServerLive", pb.ServerLiveRequest, pb.ServerLiveResponse)
        self.ServerReady = _unary(channel, "ServerReady", pb.ServerReadyRequest, pb.ServerReadyResponse)
        self.ModelReady = _unary(channel, "ModelReady", pb.ModelReadyRequest, pb.ModelReadyResponse)
        self.ServerMetadata = _unary(
            channel, "ServerMetadata", pb.ServerMetadataRequest, pb.ServerMetadataResponse
        )
        self.ModelMetadata = _unary(channel, "ModelMetadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse)
        self.ModelInfer = _unary(channel, "ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse)
        self.RepositoryIndex = _unary(
            channel, "RepositoryIndex", pb.RepositoryIndexRequest, pb.RepositoryIndexResponse
        )

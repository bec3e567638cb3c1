"""sam-triton: a typed client SDK for Segment Anything served by NVIDIA Triton.

    from sam_triton import RemoteSamPredictor
    predictor = RemoteSamPredictor("localhost:8001")      # instead of SamPredictor(sam)
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])

Needs numpy, grpcio, protobuf and Pillow; never torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._automask_core import AutomaskOutput
from ._video_core import TrackedFrame, VideoSessionReprimedWarning
from .aio import AsyncSamClient
from .amg import AmgParams
from .client import SamClient
from .config import ClientConfig, KeepAliveConfig, ModelNames, Priority, RetryPolicy, TlsConfig
from .errors import (
    AuthenticationError,
    DeadlineExceededError,
    EmbeddingNotFoundError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    PredictionNotFoundError,
    ResourceExhaustedError,
    SamTritonError,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
    VideoSessionNotFoundError,
)
from .images import load_image
from .interactive import LatestClick, LatestClickThread
from .predictor import RemoteSamPredictor
from .prompts import Prompt
from .results import ImageEmbedding, ModelMetadata, Prediction, PreviousMask, TensorSpec
from .sam2_predictor import RemoteSam2ImagePredictor
from .video import AsyncVideoTracker, VideoTracker
from .video_predictor import RemoteSam2VideoPredictor

if TYPE_CHECKING:
    from .automask import RemoteAutomaticMaskGenerator, RemoteSam2AutomaticMaskGenerator

__version__ = "0.1.0"

__all__ = [
    "AmgParams",
    "AsyncSamClient",
    "AsyncVideoTracker",
    "AuthenticationError",
    "AutomaskOutput",
    "ClientConfig",
    "DeadlineExceededError",
    "EmbeddingNotFoundError",
    "ImageEmbedding",
    "InvalidInputError",
    "KeepAliveConfig",
    "LatestClick",
    "LatestClickThread",
    "ModelMetadata",
    "ModelNames",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "Prediction",
    "PredictionNotFoundError",
    "PreviousMask",
    "Priority",
    "Prompt",
    "RemoteAutomaticMaskGenerator",
    "RemoteSam2AutomaticMaskGenerator",
    "RemoteSam2ImagePredictor",
    "RemoteSam2VideoPredictor",
    "RemoteSamPredictor",
    "ResourceExhaustedError",
    "RetryPolicy",
    "SamClient",
    "SamTritonError",
    "ServerError",
    "ServerOverloadedError",
    "ServerUnavailableError",
    "TensorSpec",
    "TlsConfig",
    "TrackedFrame",
    "VideoSessionNotFoundError",
    "VideoSessionReprimedWarning",
    "VideoTracker",
    "load_image",
]


def __getattr__(name: str) -> Any:
    # The automatic mask generator lives in its own module (written separately, and heavier);
    # importing it on first use keeps `import sam_triton` light and independent of it.
    if name == "RemoteAutomaticMaskGenerator":
        from .automask import RemoteAutomaticMaskGenerator

        return RemoteAutomaticMaskGenerator
    if name == "RemoteSam2AutomaticMaskGenerator":
        from .automask import RemoteSam2AutomaticMaskGenerator

        return RemoteSam2AutomaticMaskGenerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Typed results returned by the clients."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, eq=False)
class ImageEmbedding:
    """Handle to one encoded image: what ``predict`` needs besides the prompts.

    Either the embedding itself travels with the handle (``embedding`` set: stateless), or the
    server holds it and the handle names it (``session_id`` set: only prompts travel per click).
    User code passes the handle around unchanged, so switching between the two is invisible.

    A server-held handle made by ``embed`` also keeps (a reference to) the image, privately, so
    the client can encode it again, transparently, if the server has evicted the embedding.

    Attributes:
        embedding: (256, 64, 64) float32 image embedding, or None when held by the server
            (``SamClient.fetch_embedding`` downloads it).
        original_size: (H, W) of the image given by the user.
        input_size: (h, w) of the resized image inside the 1024x1024 encoder input; (0, 0)
            (``transforms.SQUARE_INPUT``) for SAM 2, whose whole image becomes the square.
        session_id: server-side id of the embedding, or None.
        from_cache: True when the server already held this image (nothing was uploaded or
            encoded), False when it encoded it now, None for a stateless embedding.
    """

    embedding: npt.NDArray[np.float32] | None
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    session_id: str | None = None
    from_cache: bool | None = field(default=None, kw_only=True)
    _image: npt.NDArray[np.uint8] | None = field(default=None, repr=False, kw_only=True)
    """The RGB image, for re-embedding after a cache miss (server-held handles only)."""
    family: str = field(default="sam1", kw_only=True)
    """The model family that made it (``sam_triton_common.contract.FAMILIES``): a handle only
    fits a model of its own family."""
    features: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict, repr=False, kw_only=True)
    """The family's other image features beside ``embedding`` (SAM 2: the high-resolution maps)."""

    @property
    def server_held(self) -> bool:
        """True when the embedding lives on the server and only its id travels per ``predict``."""
        return self.embedding is None and self.session_id is not None


@dataclass(frozen=True, eq=False)
class Prediction:
    """Masks for one prompt, with ``SamPredictor.predict``'s shapes and meaning.

    Attributes:
        masks: (K, H, W) bool at the original image size, or float32 logits with
            ``return_logits=True``; K = 3 with ``multimask_output`` else 1.
        scores: (K,) float32 predicted IoU of each mask.
        low_res_logits: (K, 256, 256) float32 logits, usable as the next ``mask_input``.
    """

    masks: npt.NDArray[np.bool_] | npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    low_res_logits: npt.NDArray[np.float32]

    def best(self) -> int:
        """Index of the mask with the highest predicted IoU."""
        return int(np.argmax(self.scores))


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served model."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    """``ModelMetadata`` of a served model."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...] = field(default_factory=tuple)
    outputs: tuple[TensorSpec, ...] = field(default_factory=tuple)

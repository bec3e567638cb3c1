"""Typed results returned by the clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from sam_triton_common.mask_codec import decode_masks

if TYPE_CHECKING:
    from .prompts import Prompt


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
    model: str | None = field(default=None, kw_only=True)
    """The encoder model that made it (its Triton name; None: not known): a client choosing
    another served model (``model=``) refuses it rather than decode it into wrong masks."""

    @property
    def server_held(self) -> bool:
        """True when the embedding lives on the server and only its id travels per ``predict``."""
        return self.embedding is None and self.session_id is not None


@dataclass(frozen=True)
class PreviousMask:
    """A mask of an earlier prediction that the server kept, named instead of uploaded: pass it
    as a prompt's ``mask_input`` to refine that mask (server-held embeddings only).

    Made by :meth:`Prediction.mask_input`; ``prediction_id`` is the server's id of that
    prediction's prompt, ``index`` which of its masks. ``origin`` (the prompt and
    ``multimask_output`` that made it) lets the SDK make it again where the server no longer
    holds it (another replica took the session over, or it was dropped to bound memory).
    """

    prediction_id: str
    index: int
    origin: tuple[Prompt, bool] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, eq=False, init=False, repr=False)
class Prediction:
    """Masks for one prompt, with ``SamPredictor.predict``'s shapes and meaning.

    Attributes:
        masks: (K, H, W) bool at the original image size, or float32 logits with
            ``return_logits=True``; K = 3 with ``multimask_output`` else 1. A compact answer
            (see ``compact_answers``) is decoded on first access, then kept.
        scores: (K,) float32 predicted IoU of each mask.
        low_res_logits: (K, 256, 256) float32 logits, usable as the next ``mask_input``; None
            when a compact answer left them on the server (``predict(..., low_res_logits=True)``
            asks for them). :meth:`mask_input` refines either way.
        prediction_id: the server's id of this prompt's kept logits (compact answers on a
            server-held embedding), else None.
    """

    scores: npt.NDArray[np.float32]
    low_res_logits: npt.NDArray[np.float32] | None
    prediction_id: str | None
    _masks: npt.NDArray[np.bool_] | npt.NDArray[np.float32] | None
    _encoded: tuple[bytes, ...]
    _origin: tuple[Prompt, bool] | None

    def __init__(
        self,
        masks: npt.NDArray[np.bool_] | npt.NDArray[np.float32] | None = None,
        scores: npt.NDArray[np.float32] | None = None,
        low_res_logits: npt.NDArray[np.float32] | None = None,
        *,
        encoded_masks: tuple[bytes, ...] = (),
        prediction_id: str | None = None,
    ) -> None:
        if (masks is None) == (not encoded_masks):
            raise ValueError("a Prediction takes either masks or encoded_masks")
        if scores is None:
            raise ValueError("a Prediction needs its scores")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "low_res_logits", low_res_logits)
        object.__setattr__(self, "prediction_id", prediction_id)
        object.__setattr__(self, "_masks", masks)
        object.__setattr__(self, "_encoded", tuple(encoded_masks))
        object.__setattr__(self, "_origin", None)

    def made_by(self, prompt: Prompt, multimask_output: bool) -> Prediction:
        """This prediction, remembering the prompt that made it (the SDK calls it once, before
        handing the prediction out), so its kept mask can be made again (PreviousMask.origin)."""
        object.__setattr__(self, "_origin", (prompt, multimask_output))
        return self

    @property
    def masks(self) -> npt.NDArray[np.bool_] | npt.NDArray[np.float32]:
        if self._masks is None:
            # Two threads may both decode once; either result is the same array.
            object.__setattr__(self, "_masks", decode_masks(list(self._encoded), (len(self._encoded),)))
        assert self._masks is not None
        return self._masks

    @property
    def encoded_masks(self) -> tuple[bytes, ...]:
        """The masks as the server sent them (``sam_triton_common.mask_codec``), or () when
        they were computed here."""
        return self._encoded

    def best(self) -> int:
        """Index of the mask with the highest predicted IoU."""
        return int(np.argmax(self.scores))

    def mask_input(self, index: int | None = None) -> PreviousMask | npt.NDArray[np.float32]:
        """What to pass as the next prompt's ``mask_input`` to refine mask ``index`` (default:
        :meth:`best`): the server's kept copy when there is one (nothing is uploaded), else the
        (1, 256, 256) logits."""
        k = self.best() if index is None else int(index)
        if not 0 <= k < len(self.scores):
            raise IndexError(f"mask {k} of a prediction with {len(self.scores)} masks")
        if self.prediction_id is not None:
            return PreviousMask(self.prediction_id, k, self._origin)
        if self.low_res_logits is None:
            raise ValueError(
                "this prediction holds neither its logits nor a server-kept id to refine it with"
            )
        logits: npt.NDArray[np.float32] = self.low_res_logits[k][None]
        return logits

    def __repr__(self) -> str:
        shape = self._masks.shape if self._masks is not None else f"{len(self._encoded)} encoded"
        return f"Prediction(masks={shape}, scores={self.scores!r}, prediction_id={self.prediction_id!r})"


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

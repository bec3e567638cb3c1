"""``RemoteSam2ImagePredictor``: ``sam2.sam2_image_predictor.SAM2ImagePredictor``'s interface,
served by Triton, for migrating SAM 2 code to a server.

Replace ``SAM2ImagePredictor(model)`` with ``RemoteSam2ImagePredictor("host:8001")``:
``set_image``, ``set_image_batch``, ``predict`` and ``predict_batch`` take the reference's
arguments (``normalize_coords``, ``return_logits``, batched boxes and points) and return numpy
arrays of its shapes and meaning (masks as float32 0/1 like the reference's ``.float()``,
low-res logits clamped to [-32, 32]). The server must serve a SAM 2 model. By default it
keeps the image's features (``sam_session``, 16 MiB) and each ``predict`` uploads the prompts
only; with ``server_embeddings=False`` they come back and travel with each ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.contract import SAM2

from .client import SamClient
from .predictor import ClientOwner, low_res_logits_of
from .prompts import Prompt
from .results import ImageEmbedding, Prediction

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .config import ClientOptions

Array = npt.NDArray[Any]
_NOT_SET = "An image must be set with .set_image(...) before mask prediction."


class RemoteSam2ImagePredictor(ClientOwner):
    """Drop-in remote ``SAM2ImagePredictor``.

    Args:
        client: ``"host:port"`` of the server, or a :class:`~sam_triton.SamClient` to share.
        mask_threshold: logits above it are foreground (the reference's default 0.0).
        max_hole_area: the reference's optional hole filling; only 0 (its default, off) is
            supported here.
        max_sprinkle_area: the reference's optional removal of small specks; only 0 (its
            default, off) is supported here.
        **options: :class:`~sam_triton.SamClient` options when ``client`` is a URL.
    """

    def __init__(
        self,
        client: str | SamClient = "localhost:8001",
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        **options: Unpack[ClientOptions],
    ) -> None:
        if max_hole_area > 0 or max_sprinkle_area > 0:
            raise NotImplementedError(
                "max_hole_area / max_sprinkle_area clean-up is not supported remotely yet"
            )
        super().__init__(client, options)
        self.mask_threshold = mask_threshold
        self._embeddings: list[ImageEmbedding] = []
        self._is_image_set = False
        self._is_batch = False
        self._orig_hw: list[tuple[int, int]] = []

    # -- SAM2ImagePredictor API --------------------------------------------------------------

    def set_image(self, image: Any) -> None:
        """Encode one RGB image (numpy HxWx3 uint8 or PIL) on the server."""
        embedding = self._embed(image)
        self.reset_predictor()
        self._embeddings, self._orig_hw = [embedding], [embedding.original_size]
        self._is_image_set = True

    def set_image_batch(self, image_list: Sequence[Array]) -> None:
        """Encode several RGB numpy images; ``predict_batch`` then takes one prompt set per image."""
        if not isinstance(image_list, list | tuple) or not all(isinstance(i, np.ndarray) for i in image_list):
            raise AssertionError("Images are expected to be an np.ndarray in RGB format, and of shape  HWC")
        embeddings = [self._embed(image) for image in image_list]
        self.reset_predictor()
        self._embeddings, self._orig_hw = embeddings, [e.original_size for e in embeddings]
        self._is_image_set = self._is_batch = True

    def predict(
        self,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        box: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[Array, Array, Array]:
        """Masks (C, H, W), scores (C,), low-res logits (C, 256, 256) for prompts on the current
        image; with B batched prompts (points [B, N, 2] or boxes [B, 4]), each gains a B axis."""
        if not self._is_image_set:
            raise RuntimeError(_NOT_SET)
        return self._predict(
            -1, point_coords, point_labels, box, mask_input, multimask_output, return_logits, normalize_coords
        )

    def predict_batch(
        self,
        point_coords_batch: Sequence[Any] | None = None,
        point_labels_batch: Sequence[Any] | None = None,
        box_batch: Sequence[Any] | None = None,
        mask_input_batch: Sequence[Any] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[Array], list[Array], list[Array]]:
        """``predict`` for each image of ``set_image_batch``, with that image's prompts."""
        if not self._is_batch:
            raise RuntimeError("This function should only be used when in batched mode")
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image_batch(...) before mask prediction.")
        out: tuple[list[Array], list[Array], list[Array]] = ([], [], [])
        for i in range(len(self._embeddings)):

            def pick(batch: Sequence[Any] | None, index: int = i) -> Any:
                return batch[index] if batch is not None else None

            result = self._predict(
                i,
                pick(point_coords_batch),
                pick(point_labels_batch),
                pick(box_batch),
                pick(mask_input_batch),
                multimask_output,
                return_logits,
                normalize_coords,
            )
            for target, value in zip(out, result, strict=True):
                target.append(value)
        return out

    def get_image_embedding(self) -> Array:
        """The current image's embedding, (1, 256, 64, 64) float32."""
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
        held = self._embeddings[-1]
        embedding = held.embedding if held.embedding is not None else self.client.fetch_embedding(held)
        return embedding[None]

    def reset_predictor(self) -> None:
        self._is_image_set = self._is_batch = False
        self._embeddings, self._orig_hw = [], []

    # -- internals ---------------------------------------------------------------------------

    def _embed(self, image: Any) -> ImageEmbedding:
        embedding = self.client.embed(image)
        if embedding.family != SAM2.name:
            raise ValueError(
                f"the server's model is a {embedding.family} model; RemoteSam2ImagePredictor needs a SAM 2 "
                "model (use RemoteSamPredictor for SAM 1)"
            )
        return embedding

    def _predict(
        self,
        index: int,
        point_coords: npt.ArrayLike | None,
        point_labels: npt.ArrayLike | None,
        box: npt.ArrayLike | None,
        mask_input: npt.ArrayLike | None,
        multimask_output: bool,
        return_logits: bool,
        normalize_coords: bool,
    ) -> tuple[Array, Array, Array]:
        embedding = self._embeddings[index]
        h, w = embedding.original_size
        prompts, batched = _prompts(
            point_coords, point_labels, box, mask_input, 1.0 if normalize_coords else (w, h)
        )
        logits = return_logits or self.mask_threshold != 0.0
        # The reference returns the low-res logits: always ask for them.
        result = self.client.predict(
            embedding, prompts, multimask_output, return_logits=logits, low_res_logits=True
        )
        preds: list[Prediction] = result if isinstance(result, list) else [result]
        masks: Array = np.stack([p.masks for p in preds])
        if logits and not return_logits:
            masks = masks > self.mask_threshold
        masks = masks.astype(np.float32)
        scores = np.stack([p.scores for p in preds]).astype(np.float32)
        low = np.clip(np.stack([low_res_logits_of(p) for p in preds]), -32.0, 32.0)
        return (masks, scores, low) if batched else (masks[0], scores[0], low[0])


def _prompts(
    point_coords: npt.ArrayLike | None,
    point_labels: npt.ArrayLike | None,
    box: npt.ArrayLike | None,
    mask_input: npt.ArrayLike | None,
    scale: float | tuple[int, int],
) -> tuple[list[Prompt], bool]:
    """The reference's (possibly batched) prompt arrays as one Prompt per object; ``scale``
    turns ``normalize_coords=False`` coordinates ([0, 1]) into pixels."""
    factor = np.asarray(scale, dtype=np.float64)
    coords = None if point_coords is None else np.asarray(point_coords, dtype=np.float64) * factor
    labels = None if point_labels is None else np.asarray(point_labels)
    boxes = None if box is None else np.asarray(box, dtype=np.float64).reshape(-1, 2, 2) * factor
    masks = None if mask_input is None else np.asarray(mask_input, dtype=np.float32)
    if coords is not None and coords.ndim == 2:
        coords, labels = coords[None], None if labels is None else np.asarray(labels)[None]
    if masks is not None and masks.ndim == 3:
        masks = masks[None]
    count = max(len(x) for x in (coords, boxes, masks, [None]) if x is not None)
    batched = (coords is not None and count > 1) or (boxes is not None and len(boxes) > 1)

    def row(array: Array | None, i: int) -> Array | None:
        return None if array is None else array[i if len(array) > 1 else 0]

    prompts = []
    for i in range(count):
        b = row(boxes, i)
        prompts.append(
            Prompt(row(coords, i), row(labels, i), None if b is None else b.reshape(4), row(masks, i))
        )
    return prompts, batched

"""``RemoteSamPredictor``: ``segment_anything.SamPredictor``'s interface, served by Triton.

Replace ``SamPredictor(sam)`` with ``RemoteSamPredictor("host:8001")``; ``set_image`` and
``predict`` take the same arguments and return arrays of the same shapes, dtypes and meaning.

By default the server holds the embedding (``sam_session``): ``set_image`` uploads the image
only when the server does not already hold that content, and each ``predict`` uploads just
the prompts (a point click is well under 1 KiB). If the server has evicted the embedding, the
predictor encodes the image again, once, without the caller noticing. Pass
``server_embeddings=False`` for the stateless path (the embedding travels with every click).

``compact=True`` trades the reference's third return value for bytes: the masks are made on
the server and come back run-length encoded or bit-packed (a few KB instead of 256 KiB of
logits per mask; the same bits), ``predict`` returns None for the low-res logits, and the
server keeps them: refine with ``mask_input=predictor.last_prediction.mask_input()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sam_triton_common.transforms import IMAGE_SIZE, ResizeLongestSide

from .client import SamClient
from .errors import ServerError
from .images import ImageFormat, ImageInput
from .prompts import Prompt
from .results import ImageEmbedding, Prediction

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from .config import ClientOptions

_NOT_SET = "An image must be set with .set_image(...) before mask prediction."
_NOT_SET_EMBEDDING = "An image must be set with .set_image(...) to generate an embedding."


class ClientOwner:
    """A drop-in's client: made from a URL and options (then closed with the drop-in), or a
    :class:`~sam_triton.SamClient` shared with the caller (left open)."""

    def __init__(self, client: str | SamClient, options: Mapping[str, Any]) -> None:
        if isinstance(client, SamClient):
            if options:
                raise TypeError("client options apply only when a URL is given, not a SamClient")
            self.client, self._owns_client = client, False
        else:
            self.client, self._owns_client = SamClient(client, **options), True

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteSamPredictor(ClientOwner):
    """Drop-in remote ``SamPredictor``.

    Args:
        client: ``"host:port"`` of the server's gRPC endpoint, or an existing
            :class:`~sam_triton.SamClient` to share (then it is not closed by this predictor).
        compact: return None for the low-res logits and leave them on the server (see the
            module doc); False (default): ``SamPredictor``'s return values.
        **options: :class:`~sam_triton.SamClient` keyword options when ``client`` is a URL
            (e.g. ``server_embeddings=False`` for the stateless path).

    Beyond ``SamPredictor``: :meth:`predict_batch` (many prompts on the current image, one
    round trip per group of equal point counts), :attr:`embedding` (the typed handle),
    ``set_image(..., session_id=...)`` and :meth:`close` / context manager.
    """

    def __init__(
        self,
        client: str | SamClient = "localhost:8001",
        *,
        compact: bool = False,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(client, options)
        self.compact = compact
        self.last_prediction: Prediction | None = None
        """The typed result of the last ``predict`` (its ``mask_input()`` refines a mask)."""
        self.transform = ResizeLongestSide(IMAGE_SIZE)
        self._features: npt.NDArray[np.float32] | None = None  # downloaded on first request
        self.embedding: ImageEmbedding | None = None
        self.is_image_set = False
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.orig_h: int | None = None
        self.orig_w: int | None = None
        self.input_h: int | None = None
        self.input_w: int | None = None

    # -- SamPredictor API -------------------------------------------------------------------

    def set_image(
        self, image: ImageInput, image_format: ImageFormat = "RGB", *, session_id: str | None = None
    ) -> None:
        """Encode an image on the server (numpy HWC uint8 RGB/BGR, gray, RGBA, PIL, path or bytes).

        On failure the previously set image stays set: a bad input changes nothing.
        ``session_id`` names the server-held embedding (default: the image's content hash).
        """
        # The handle keeps the image, so the client itself re-embeds after an eviction.
        embedding = self.client.embed(image, image_format, session_id=session_id)
        self.reset_image()
        self.embedding = embedding
        self.original_size = embedding.original_size
        self.input_size = embedding.input_size
        self.orig_h, self.orig_w = embedding.original_size
        self.input_h, self.input_w = embedding.input_size
        self.is_image_set = True

    def predict(
        self,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        box: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """Masks for prompts on the current image, exactly as ``SamPredictor.predict``.

        ``mask_input`` also takes a :class:`~sam_triton.PreviousMask`
        (``last_prediction.mask_input()``): the server's kept logits, not uploaded.

        Returns:
            masks: (C, H, W) bool at the original size (float32 logits with ``return_logits``),
            scores: (C,) float32 predicted IoUs, low_res_logits: (C, 256, 256) float32 (None
            with ``compact=True``); C = 3 with ``multimask_output`` else 1.
        """
        self._require_image()  # before validating prompts: the reference checks this first too
        prompt = Prompt(point_coords, point_labels, box, mask_input)
        pred = self._predict([prompt], multimask_output, return_logits)[0]
        self.last_prediction = pred
        return pred.masks, pred.scores, None if self.compact else low_res_logits_of(pred)

    def get_image_embedding(self) -> npt.NDArray[np.float32]:
        """The current image's embedding, (1, 256, 64, 64) float32 like ``SamPredictor``'s.

        A server-held embedding is downloaded on the first call (4 MiB) and kept.
        """
        if not self.is_image_set or self.embedding is None:
            raise RuntimeError(_NOT_SET_EMBEDDING)
        if self._features is None:
            self._features = self.client.fetch_embedding(self.embedding)[None]
        return self._features

    @property
    def features(self) -> npt.NDArray[np.float32] | None:
        """``SamPredictor.features``: the embedding (1, 256, 64, 64), or None before set_image.

        Like :meth:`get_image_embedding`, downloads a server-held embedding on first access.
        """
        if not self.is_image_set or self.embedding is None:
            return None
        return self.get_image_embedding()

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.last_prediction = None
        self.embedding = None
        self._features = None
        self.original_size = None
        self.input_size = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None

    # -- extensions -------------------------------------------------------------------------

    def predict_batch(
        self,
        prompts: Sequence[Prompt | Mapping[str, Any]],
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> list[Prediction]:
        """Many prompts (``Prompt`` or dicts of ``predict``'s prompt arguments) on the current image."""
        self._require_image()
        items = [p if isinstance(p, Prompt) else Prompt(**p) for p in prompts]
        return self._predict(items, multimask_output, return_logits)

    def _require_image(self) -> ImageEmbedding:
        if not self.is_image_set or self.embedding is None:
            raise RuntimeError(_NOT_SET)
        return self.embedding

    def _predict(
        self, prompts: list[Prompt], multimask_output: bool, return_logits: bool
    ) -> list[Prediction]:
        embedding = self._require_image()
        result = self.client.predict(
            embedding, prompts, multimask_output, return_logits, low_res_logits=not self.compact
        )
        return result if isinstance(result, list) else [result]


def low_res_logits_of(pred: Prediction) -> npt.NDArray[np.float32]:
    """A prediction's low-res logits, which the drop-ins ask for (the reference returns them)."""
    if pred.low_res_logits is None:
        raise ServerError("the server sent no low_res_masks although they were asked for")
    return pred.low_res_logits

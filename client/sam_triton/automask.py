"""``RemoteAutomaticMaskGenerator``: ``SamAutomaticMaskGenerator`` served by Triton (and
``RemoteSam2AutomaticMaskGenerator``: ``SAM2AutomaticMaskGenerator``'s arguments and defaults).

    from sam_triton import RemoteAutomaticMaskGenerator
    generator = RemoteAutomaticMaskGenerator("localhost:8001", crop_n_layers=1)
    records = generator.generate(image)   # same keys and meanings as the reference

The whole algorithm (crops, point grids, filters, stability scores, box and crop NMS,
small-region clean-up) runs next to the model in the ``sam_automask`` model; only the kept
masks come back, as RLE. ``output_mode`` is applied here: ``binary_mask`` gives (H, W) bool
arrays, ``uncompressed_rle`` and ``coco_rle`` the reference's dicts (the COCO strings are
pycocotools' own format, decodable with ``pycocotools.mask.decode``).

The client learns the served model's family from the server: against a SAM 2 model the
masks are ``SAM2AutomaticMaskGenerator``'s, and an argument the caller left out takes that
generator's default (``pred_iou_thresh=0.8`` instead of SAM 1's 0.88).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy.typing as npt
from sam_triton_common.amg import MaskRecord, OutputMode, family_params

from ._automask_core import AutomaskOutput
from .aio import AsyncSamClient
from .client import SamClient
from .errors import InvalidInputError
from .images import ImageFormat, ImageInput

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .config import ClientOptions

__all__ = ["AutomaskOutput", "RemoteAutomaticMaskGenerator"]

DEFAULT_TIMEOUT = 600.0
"""Seconds for one image when the generator opens its own client: a full AMG run (hundreds of
decoder prompts per crop) takes far longer than the SDK's 60 s default on a CPU server."""


class RemoteAutomaticMaskGenerator:
    """Drop-in for ``segment_anything.SamAutomaticMaskGenerator`` (no ``model`` argument).

    ``points_per_side`` to ``output_mode`` are exactly ``SamAutomaticMaskGenerator``'s
    parameters, defaults and meanings; invalid values raise
    :class:`~sam_triton.InvalidInputError` here, before anything is sent. Against a SAM 2
    model it runs ``SAM2AutomaticMaskGenerator``, and ``pred_iou_thresh`` left as None is the
    served family's default (0.88 for SAM 1, 0.8 for SAM 2).

    Args:
        url_or_client: ``"host:port"`` (the generator opens, and closes, its own
            :class:`~sam_triton.SamClient`), or an open :class:`~sam_triton.SamClient` /
            :class:`~sam_triton.AsyncSamClient` to share (left open).
        image_format: channel order of array images (``"RGB"`` like the reference, or ``"BGR"``).
        **options: client options (``timeout``, ``tls``, ...) when a URL is given; ``timeout``
            defaults to 600 s. ``model="NAME"`` picks a served model on a server that serves
            several (``sam-triton export --name NAME``); with an open client it must be the
            client's own.
    """

    def __init__(
        self,
        url_or_client: str | SamClient | AsyncSamClient = "localhost:8001",
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[npt.ArrayLike] | None = None,
        min_mask_region_area: int = 0,
        output_mode: OutputMode = "binary_mask",
        *,
        image_format: ImageFormat = "RGB",
        **options: Unpack[ClientOptions],
    ) -> None:
        self.arguments: dict[str, Any] = dict(
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids,
            min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
        )
        """The generator's arguments the caller set; the served family's defaults fill in the rest."""
        if pred_iou_thresh is not None:
            self.arguments["pred_iou_thresh"] = pred_iou_thresh
        family_params("sam1", **self.arguments)  # validated now, before anything is sent
        self.image_format: ImageFormat = image_format
        model = options.get("model")
        self._owns_client = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            options.setdefault("timeout", DEFAULT_TIMEOUT)
            self.client: SamClient | AsyncSamClient = SamClient(url_or_client, **options)
        else:
            if set(options) - {"model"}:
                raise TypeError(f"client options {sorted(options)} need a URL, not an open client")
            if model is not None and model != url_or_client.config.models.model:
                raise TypeError(f"model={model!r} needs a URL or a client made with model={model!r}")
            self.client = url_or_client
        self.model = self.client.config.models.automask
        """The Triton model that computes the masks."""

    def run(self, image: ImageInput, *, priority: int | None = None) -> AutomaskOutput:
        """Records plus what the call cost (bytes received, server time, crops, prompts).

        ``priority`` overrides the model's default (``Priority.BATCH``) for this image.
        """
        if not isinstance(self.client, SamClient):
            raise TypeError("this generator holds an AsyncSamClient: use `await generator.run_async(image)`")
        return self.client.automask(
            image, self.arguments, self.image_format, model=self.model, priority=priority
        )

    def generate(self, image: ImageInput) -> list[MaskRecord]:
        """``SamAutomaticMaskGenerator.generate``: one record per mask, ``[]`` when there is none."""
        return self.run(image).records

    async def run_async(self, image: ImageInput, *, priority: int | None = None) -> AutomaskOutput:
        if isinstance(self.client, AsyncSamClient):
            return await self.client.automask(
                image, self.arguments, self.image_format, model=self.model, priority=priority
            )
        return await asyncio.to_thread(lambda: self.run(image, priority=priority))

    async def generate_async(self, image: ImageInput) -> list[MaskRecord]:
        """:meth:`generate` for asyncio code (any client; a sync one runs in a worker thread)."""
        return (await self.run_async(image)).records

    def close(self) -> None:
        """Close the client if the generator opened it (an AsyncSamClient is closed by its owner)."""
        if self._owns_client and isinstance(self.client, SamClient):
            self.client.close()

    def __enter__(self) -> RemoteAutomaticMaskGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r}, {self.arguments})"


class RemoteSam2AutomaticMaskGenerator(RemoteAutomaticMaskGenerator):
    """Drop-in for ``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator`` (no ``model``
    argument): its parameters, in its order, with its defaults and meanings; the masks are
    computed on the server exactly as it computes them (``use_m2m``'s refinement,
    ``min_mask_region_area`` as its predictor's hole and sprinkle clean-up, on the CPU).

    The connection arguments are :class:`RemoteAutomaticMaskGenerator`'s. ``use_m2m=True`` or
    ``multimask_output=False`` against a SAM 1 model is an :class:`~sam_triton.InvalidInputError`
    (SAM 1's generator has neither); the other parameters run there with the values given.
    """

    def __init__(
        self,
        url_or_client: str | SamClient | AsyncSamClient = "localhost:8001",
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[npt.ArrayLike] | None = None,
        min_mask_region_area: int = 0,
        output_mode: OutputMode = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        *,
        image_format: ImageFormat = "RGB",
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(
            url_or_client,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids,
            min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
            image_format=image_format,
            **options,
        )
        self.arguments.update(
            mask_threshold=mask_threshold, use_m2m=use_m2m, multimask_output=multimask_output
        )
        try:
            family_params("sam2", **self.arguments)
        except InvalidInputError:
            self.close()  # the client the base class opened for a URL
            raise

"""MobileSAM (``mobile_sam`` model types): the ``mobile_sam`` package's TinyViT image encoder with
SAM 1's prompt encoder and mask decoder.

Served, a MobileSAM model *is* a SAM 1 family model: the same 1024-pixel preprocessing, the same
256x64x64 embedding and the same decoder graphs (``sam_triton_common.contract.SAM1``), so the
server and the SDK need nothing of their own. What is MobileSAM's is here: building the model
with the package's own classes, recognising its checkpoints (``mobile_sam.pt`` is a bare state
dict, like SAM's files) and the package's ``SamPredictor`` as the reference.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

from sam_triton_export.model_types import MOBILE_SAM_MODEL_TYPES, MobileSamModelType

if TYPE_CHECKING:
    import torch

_STEM_WEIGHT = "image_encoder.patch_embed.seq.2.c.weight"
"""The TinyViT stem's last convolution: its output channels are the first stage's width."""
_BLOCK_KEY = re.compile(r"^image_encoder\.layers\.(\d+)\.blocks\.(\d+)\.")
_NECK_INPUT = "image_encoder.neck.0.weight"
"""The neck's first convolution: its input channels are the last stage's width."""


def instantiate_mobile_sam(spec: MobileSamModelType) -> Any:
    """A randomly initialised, eval-mode ``mobile_sam`` Sam of ``spec`` (torch's global RNG)."""
    with warnings.catch_warnings():
        # Importing the package re-registers timm's tiny_vit_* names and uses timm's deprecated
        # module paths: warnings about the package's code, nothing a user can act on.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        from mobile_sam.build_sam import build_sam_vit_t
        from mobile_sam.modeling import TinyViT

    sam = build_sam_vit_t(checkpoint=None)
    if spec != MOBILE_SAM_MODEL_TYPES["mobile_sam"]:
        # build_sam_vit_t's own arguments with other stage widths; every part but the
        # encoder stays the package's.
        sam.image_encoder = TinyViT(
            img_size=1024,
            in_chans=3,
            num_classes=1000,
            embed_dims=list(spec.embed_dims),
            depths=list(spec.depths),
            num_heads=list(spec.num_heads),
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
    # eval() also caches each attention's bias table (TinyViT's ``ab``) from its parameters:
    # whoever loads weights afterwards must call eval() again (build_sam does).
    return sam.eval()


def encoder_geometry(state_dict: dict[str, torch.Tensor]) -> tuple[int, int, int] | None:
    """(first width, last width, blocks) of the TinyViT encoder in ``state_dict``; None when it
    holds none."""
    stem, neck = state_dict.get(_STEM_WEIGHT), state_dict.get(_NECK_INPUT)
    if stem is None or neck is None:
        return None
    blocks = {(m.group(1), m.group(2)) for key in state_dict if (m := _BLOCK_KEY.match(key))}
    return int(stem.shape[0]), int(neck.shape[1]), len(blocks)


def detect_mobile_sam_type(state_dict: dict[str, torch.Tensor]) -> MobileSamModelType | None:
    """The MobileSAM model type whose encoder geometry ``state_dict`` has, if any."""
    found = encoder_geometry(state_dict)
    for spec in MOBILE_SAM_MODEL_TYPES.values():
        if found == (spec.embed_dims[0], spec.embed_dims[-1], spec.depth):
            return spec
    return None


def is_mobile_sam(sam: object) -> bool:
    """Whether ``sam`` was built by the ``mobile_sam`` package (whose predictor is its reference)."""
    return type(sam).__module__.startswith("mobile_sam.")

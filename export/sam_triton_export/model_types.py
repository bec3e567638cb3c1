"""The model types this project exports, each described by the object that carries its
facts: :class:`ModelType` (SAM 1), :class:`MobileSamModelType` (MobileSAM: SAM 1's decoder) and
:class:`Sam2ModelType` (SAM 2 / 2.1).

A type name is resolved once, at the edge (:func:`resolve_model_type`: the CLI, or the first
line of ``export_repository``), and the object is what the exporter passes on; its
``family`` (``sam_triton_common.contract``) picks every family-specific step.

SAM 1 variants share SAM's prompt encoder and mask decoder (256-d prompts, 64x64 embeddings,
1024-pixel input); only the image encoder differs: SAM's ViT (:class:`ModelType`) or MobileSAM's
TinyViT (:class:`MobileSamModelType`). ``tiny-test`` is a two-block ViT with that same structure
(``mobile_sam-tiny-test`` a narrow TinyViT) so the whole pipeline (export, serve, parity) runs in
seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sam_triton_common.contract import EMBEDDING_SHAPE, SAM1, SAM2, Family
from sam_triton_common.contract import IMAGE_SIZE as IMAGE_SIZE
from sam_triton_common.contract import LOW_RES_SIZE as LOW_RES_SIZE

EMBED_DIM, EMBED_SIZE = EMBEDDING_SHAPE[0], EMBEDDING_SHAPE[1]
PATCH_SIZE = 16


@dataclass(frozen=True)
class ModelType:
    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]

    family: ClassVar[Family] = SAM1

    def describe(self) -> str:
        return f"{self.name} (encoder width {self.encoder_embed_dim}, depth {self.encoder_depth})"


# The vit_* numbers are those of segment_anything.build_sam; they are repeated here only so a
# checkpoint's type can be recognised from its tensor shapes (see checkpoints.detect_model_type).
MODEL_TYPES: dict[str, ModelType] = {
    "vit_h": ModelType("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": ModelType("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": ModelType("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "tiny-test": ModelType("tiny-test", 64, 2, 2, (1,)),
}


@dataclass(frozen=True)
class MobileSamModelType:
    """MobileSAM: SAM 1's prompt encoder and mask decoder (so the SAM 1 family's served
    contract: 1024-pixel input, 256x64x64 embeddings) behind a TinyViT image encoder, built
    and run by the ``mobile_sam`` package (its ``SamPredictor`` is the reference)."""

    name: str
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]

    family: ClassVar[Family] = SAM1

    @property
    def depth(self) -> int:
        return sum(self.depths)

    def describe(self) -> str:
        return f"{self.name} (TinyViT encoder, widths {list(self.embed_dims)}, depth {self.depth})"


# mobile_sam is build_sam_vit_t's TinyViT-5M exactly; the test type keeps its four stages,
# windows and 1024-pixel input with narrower, one-block stages, so the suite exports it in
# seconds (widths and depth are how a checkpoint's type is recognised). Its last stage stays
# 320 wide: TinyViT keeps 64x64 tokens into the last stage only for that width (448 and 576).
MOBILE_SAM_MODEL_TYPES: dict[str, MobileSamModelType] = {
    "mobile_sam": MobileSamModelType("mobile_sam", (64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10)),
    "mobile_sam-tiny-test": MobileSamModelType(
        "mobile_sam-tiny-test", (16, 16, 32, 320), (1, 1, 1, 1), (1, 1, 2, 10)
    ),
}


@dataclass(frozen=True)
class EfficientVitSamModelType:
    """EfficientViT-SAM's XL models: SAM 1's prompt encoder and mask decoder behind an
    EfficientViT image encoder that takes SAM 1's 1024-pixel input (so the SAM 1 family's served
    contract), built and run by the ``efficientsam`` package (its ``EfficientViTSamPredictor`` is
    the reference)."""

    name: str
    builder: str
    """The package's function that builds it (``efficientsam.models.efficientvit.sam``); empty
    for the test configuration."""
    encoder_tensors: int
    encoder_values: int
    """The image encoder's state-dict entries and their values: how a checkpoint's type is
    recognised."""

    family: ClassVar[Family] = SAM1

    def describe(self) -> str:
        return f"{self.name} (EfficientViT encoder, {self.encoder_values / 1e6:.1f} M values)"


EFFICIENTVIT_SAM_MODEL_TYPES: dict[str, EfficientVitSamModelType] = {
    "efficientvit_sam_xl0": EfficientVitSamModelType(
        "efficientvit_sam_xl0", "efficientvit_sam_xl0", 318, 112946956
    ),
    "efficientvit_sam_xl1": EfficientVitSamModelType(
        "efficientvit_sam_xl1", "efficientvit_sam_xl1", 564, 199376174
    ),
    # The XL structure with a few channels a stage (family_efficientvit_sam), for the suite.
    "efficientvit_sam-tiny-test": EfficientVitSamModelType("efficientvit_sam-tiny-test", "", 170, 342128),
}


@dataclass(frozen=True)
class Sam2ModelType:
    """One SAM 2 model: its hydra config inside the sam2 package, and its trunk's geometry
    (how a checkpoint's size is recognised)."""

    name: str
    config: str
    trunk_width: int
    trunk_depth: int
    overrides: tuple[str, ...] = ()

    family: ClassVar[Family] = SAM2

    @property
    def version(self) -> str:
        return "2.1" if "/sam2.1/" in self.config else "2.0"

    def describe(self) -> str:
        return f"{self.name} (SAM {self.version} Hiera, width {self.trunk_width}, depth {self.trunk_depth})"


# A five-block Hiera of width 16 with SAM 2.1's heads: the whole structure (four stages,
# windowed and global attention, q-pooling, FPN neck, the full decoder with high-res features)
# in a few MB, so the suite runs the family in seconds.
_TEST_OVERRIDES = (
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_encoder.fuser.num_layers=1",
)

_SIZES = {
    "tiny": ("t", 96, 12),
    "small": ("s", 96, 16),
    "base_plus": ("b+", 112, 24),
    "large": ("l", 144, 48),
}
SAM2_MODEL_TYPES: dict[str, Sam2ModelType] = {
    **{
        f"sam2.1_hiera_{size}": Sam2ModelType(
            f"sam2.1_hiera_{size}", f"configs/sam2.1/sam2.1_hiera_{s}.yaml", w, d
        )
        for size, (s, w, d) in _SIZES.items()
    },
    **{
        f"sam2_hiera_{size}": Sam2ModelType(f"sam2_hiera_{size}", f"configs/sam2/sam2_hiera_{s}.yaml", w, d)
        for size, (s, w, d) in _SIZES.items()
    },
    "sam2.1-tiny-test": Sam2ModelType(
        "sam2.1-tiny-test", "configs/sam2.1/sam2.1_hiera_t.yaml", 16, 5, _TEST_OVERRIDES
    ),
}

Sam1ModelType = ModelType | MobileSamModelType | EfficientVitSamModelType
"""The types with SAM 1's decoder and served contract, whichever their image encoder."""
AnyModelType = Sam1ModelType | Sam2ModelType
ALL_MODEL_TYPES: dict[str, AnyModelType] = {
    **MODEL_TYPES,
    **MOBILE_SAM_MODEL_TYPES,
    **EFFICIENTVIT_SAM_MODEL_TYPES,
    **SAM2_MODEL_TYPES,
}
"""Every ``--model-type`` the exporter takes, by name."""


def resolve_model_type(model_type: str | AnyModelType) -> AnyModelType:
    """The object of a model type name (an object is returned as it is); ValueError naming
    the known ones otherwise."""
    if not isinstance(model_type, str):
        return model_type
    try:
        return ALL_MODEL_TYPES[model_type]
    except KeyError:
        known = ", ".join(ALL_MODEL_TYPES)
        raise ValueError(f"unknown model type {model_type!r}; choose one of: {known}") from None


def get_model_type(model_type: str | AnyModelType) -> Sam1ModelType:
    """:func:`resolve_model_type` for the code that builds SAM 1 (ValueError for another family)."""
    spec = resolve_model_type(model_type)
    if isinstance(spec, Sam2ModelType):
        known = ", ".join([*MODEL_TYPES, *MOBILE_SAM_MODEL_TYPES, *EFFICIENTVIT_SAM_MODEL_TYPES])
        raise ValueError(f"{spec.describe()} is not a SAM 1 model type ({known})")
    return spec


def get_sam2_model_type(model_type: str | AnyModelType) -> Sam2ModelType:
    """:func:`resolve_model_type` for the code that builds SAM 2 (ValueError for another family)."""
    spec = resolve_model_type(model_type)
    if not isinstance(spec, Sam2ModelType):
        raise ValueError(f"{spec.describe()} is not a SAM 2 model type ({', '.join(SAM2_MODEL_TYPES)})")
    return spec

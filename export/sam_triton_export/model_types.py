"""The SAM variants this project exports, described by their image-encoder geometry.

All variants share SAM's prompt encoder and mask decoder (256-d prompts, 64x64 embeddings,
1024-pixel input); only the ViT image encoder differs. ``tiny-test`` is a two-block ViT with
that same structure so the whole pipeline (export, serve, parity) runs in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from sam_triton_common.contract import EMBEDDING_SHAPE
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


def get_model_type(name: str) -> ModelType:
    try:
        return MODEL_TYPES[name]
    except KeyError:
        known = ", ".join(MODEL_TYPES)
        raise ValueError(f"unknown model type {name!r}; choose one of: {known}") from None

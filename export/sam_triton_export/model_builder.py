"""Build an eval-mode segment_anything ``Sam`` for a model type: the one code path used by the
CLI, the exporter, verify and the tests' PyTorch reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sam_triton_export.model_types import get_model_type

if TYPE_CHECKING:
    from segment_anything.modeling import Sam


def instantiate_sam(model_type: str) -> Sam:
    """A randomly initialised ``Sam`` of ``model_type`` (torch's global RNG decides the weights)."""
    # segment_anything's own builder, so tiny-test has exactly SAM's structure and only a
    # smaller ViT; _build_sam is private but segment-anything is pinned to 1.0.
    from segment_anything.build_sam import _build_sam

    spec = get_model_type(model_type)
    sam: Sam = _build_sam(
        encoder_embed_dim=spec.encoder_embed_dim,
        encoder_depth=spec.encoder_depth,
        encoder_num_heads=spec.encoder_num_heads,
        encoder_global_attn_indexes=list(spec.encoder_global_attn_indexes),
        checkpoint=None,
    )
    return sam.eval()


def build_sam(
    model_type: str,
    checkpoint: Path | str | None = None,
    *,
    random_seed: int | None = None,
) -> Sam:
    """SAM of ``model_type`` with weights from ``checkpoint`` or, only when asked, ``random_seed``.

    Random weights are never implicit: with neither argument this raises ``ValueError``.
    """
    from sam_triton_export.checkpoints import apply_state_dict, load_state_dict, random_state_dict

    if (checkpoint is None) == (random_seed is None):
        raise ValueError(
            "give exactly one of a checkpoint file or a random seed (random weights are never implicit)"
        )
    sam = instantiate_sam(model_type)
    if checkpoint is not None:
        apply_state_dict(sam, load_state_dict(checkpoint, model_type), str(checkpoint))
    else:
        assert random_seed is not None
        apply_state_dict(sam, random_state_dict(model_type, random_seed), f"random seed {random_seed}")
    return sam.eval()

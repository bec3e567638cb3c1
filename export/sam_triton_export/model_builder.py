"""Build an eval-mode segment_anything ``Sam`` for a model type, and seeded random weights for
it: the one code path used by the CLI, the exporter, verify and the tests' PyTorch reference.
Reading checkpoint files is :mod:`sam_triton_export.checkpoints`' job (imported, never importing
back)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sam_triton_export.checkpoints import apply_state_dict, load_state_dict
from sam_triton_export.model_types import get_model_type

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

# Zero-initialised by segment_anything; a seeded checkpoint fills them with noise so that
# parity tests also exercise the absolute and relative position embeddings.
_ZERO_INIT_SUFFIXES = ("pos_embed", "rel_pos_h", "rel_pos_w")


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


def random_state_dict(model_type: str, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a freshly initialised ``model_type`` SAM, fully determined by ``seed``."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = instantiate_sam(model_type)
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in sam.named_parameters():
                if name.endswith(_ZERO_INIT_SUFFIXES):
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    state: dict[str, torch.Tensor] = sam.state_dict()
    return state


def save_random_checkpoint(model_type: str, path: Path | str, seed: int) -> Path:
    """Write a seeded, randomly initialised ``model_type`` checkpoint in the official format."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict(model_type, seed), path)
    return path

"""Build an eval-mode segment_anything ``Sam`` (mobile_sam's or efficientsam's for the light
encoders' types) for a model
type, and seeded random weights for it: the one code path used by the CLI, the exporter, verify
and the tests' PyTorch reference. Reading checkpoint files is
:mod:`sam_triton_export.checkpoints`' job (imported, never importing back)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam_triton_export.checkpoints import apply_state_dict, load_state_dict
from sam_triton_export.model_types import (
    AnyModelType,
    EfficientVitSamModelType,
    MobileSamModelType,
    get_model_type,
)

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

# Zero-initialised by segment_anything (and TinyViT's attention biases by mobile_sam); a seeded
# checkpoint fills them with noise so that parity tests also exercise the position embeddings.
_ZERO_INIT_SUFFIXES = ("pos_embed", "rel_pos_h", "rel_pos_w", "attention_biases")


def instantiate_sam(model_type: str | AnyModelType) -> Sam:
    """A randomly initialised ``Sam`` of ``model_type`` (torch's global RNG decides the weights)."""
    # segment_anything's own builder, so tiny-test has exactly SAM's structure and only a
    # smaller ViT; _build_sam is private but segment-anything is pinned to 1.0.
    from segment_anything.build_sam import _build_sam

    spec = get_model_type(model_type)
    if isinstance(spec, MobileSamModelType):
        from sam_triton_export.family_mobile_sam import instantiate_mobile_sam

        mobile: Sam = instantiate_mobile_sam(spec)
        return mobile
    if isinstance(spec, EfficientVitSamModelType):
        from sam_triton_export.family_efficientvit_sam import instantiate_efficientvit_sam

        efficientvit: Sam = instantiate_efficientvit_sam(spec)
        return efficientvit
    sam: Sam = _build_sam(
        encoder_embed_dim=spec.encoder_embed_dim,
        encoder_depth=spec.encoder_depth,
        encoder_num_heads=spec.encoder_num_heads,
        encoder_global_attn_indexes=list(spec.encoder_global_attn_indexes),
        checkpoint=None,
    )
    return sam.eval()


def build_sam(
    model_type: str | AnyModelType,
    checkpoint: Path | str | None = None,
    *,
    random_seed: int | None = None,
) -> Sam:
    """SAM of ``model_type`` with weights from ``checkpoint`` (an official ``.pth`` file or a
    transformers ``SamModel`` directory) or, only when asked, ``random_seed``.

    Random weights are never implicit: with neither argument this raises ``ValueError``.
    """
    if (checkpoint is None) == (random_seed is None):
        raise ValueError(
            "give exactly one of a checkpoint file or a random seed (random weights are never implicit)"
        )
    spec = get_model_type(model_type)
    sam = instantiate_sam(spec)
    if checkpoint is not None and Path(checkpoint).is_dir():
        from sam_triton_export.hf_checkpoints import load_sam_state_dict

        apply_state_dict(sam, load_sam_state_dict(checkpoint, spec), str(checkpoint))
    elif checkpoint is not None:
        apply_state_dict(sam, load_state_dict(checkpoint, spec), str(checkpoint))
    else:
        assert random_seed is not None
        apply_state_dict(sam, random_state_dict(spec, random_seed), f"random seed {random_seed}")
    return sam.eval()


def seeded_state_dict(
    build: Callable[[], torch.nn.Module], seed: int, noisy: Callable[[str, torch.Tensor], bool]
) -> dict[str, torch.Tensor]:
    """``build()``'s state dict under torch seed ``seed``, with the parameters ``noisy`` picks
    (those a family initialises to zero) refilled with small seeded noise, so parity tests
    exercise them too. Any family's models: the global RNG is restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if noisy(name, param):
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    state: dict[str, torch.Tensor] = model.state_dict()
    return state


def random_state_dict(model_type: str | AnyModelType, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a freshly initialised ``model_type`` SAM, fully determined by ``seed``."""
    spec = get_model_type(model_type)
    return seeded_state_dict(
        lambda: instantiate_sam(spec), seed, lambda name, _: name.endswith(_ZERO_INIT_SUFFIXES)
    )


@dataclass(frozen=True)
class Reference:
    """The PyTorch reference of a SAM 1 family model: its own package's predictor and automatic
    mask generator (``SamPredictor``'s and ``SamAutomaticMaskGenerator``'s interfaces)."""

    name: str
    predictor: Any
    automatic_mask_generator: Any


def reference_of(sam: object) -> Reference:
    """``sam``'s reference: ``efficientsam``'s EfficientViT-SAM predictor for its models,
    ``mobile_sam``'s for MobileSAM, ``segment_anything``'s for SAM's."""
    from sam_triton_export.family_efficientvit_sam import is_efficientvit_sam
    from sam_triton_export.family_mobile_sam import is_mobile_sam

    if is_efficientvit_sam(sam):
        efficientvit = importlib.import_module("efficientsam.models.efficientvit.sam")
        return Reference(
            "efficientsam EfficientViTSamPredictor",
            efficientvit.EfficientViTSamPredictor,
            efficientvit.EfficientViTSamAutomaticMaskGenerator,
        )
    package = importlib.import_module("mobile_sam" if is_mobile_sam(sam) else "segment_anything")
    name = f"{package.__name__} SamPredictor"
    return Reference(name, package.SamPredictor, package.SamAutomaticMaskGenerator)


def save_checkpoint(content: object, path: Path | str) -> Path:
    """``torch.save`` to ``path``, creating its folder."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path)
    return path


def save_random_checkpoint(model_type: str | AnyModelType, path: Path | str, seed: int) -> Path:
    """Write a seeded, randomly initialised ``model_type`` checkpoint in the official format."""
    return save_checkpoint(random_state_dict(model_type, seed), path)

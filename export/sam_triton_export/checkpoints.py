"""Checkpoint files of the SAM 1 family (SAM's ViT, MobileSAM's TinyViT, EfficientViT-SAM's
EfficientViT): loading with clear errors, type detection (seeded random checkpoints are built by
:mod:`sam_triton_export.model_builder`).

Official SAM checkpoints (``sam_vit_b_01ec64.pth`` ...), MobileSAM's ``mobile_sam.pt`` and
EfficientViT-SAM's ``efficientvit_sam_xl0.pt`` are plain ``state_dict`` pickles; they are loaded
with ``weights_only=True`` so a checkpoint file cannot run code.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from sam_triton_export.family_efficientvit_sam import detect_efficientvit_sam_type, encoder_size
from sam_triton_export.family_mobile_sam import detect_mobile_sam_type, encoder_geometry
from sam_triton_export.model_types import MODEL_TYPES, AnyModelType, Sam1ModelType, get_model_type

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

_PATCH_WEIGHT = "image_encoder.patch_embed.proj.weight"
_BLOCK_KEY = re.compile(r"^image_encoder\.blocks\.(\d+)\.")


class CheckpointError(Exception):
    """A checkpoint file that cannot be used for the requested model type."""


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def detect_model_type(state_dict: dict[str, torch.Tensor]) -> Sam1ModelType | None:
    """The known model type whose encoder width and depth match ``state_dict``, if any."""
    patch = state_dict.get(_PATCH_WEIGHT)
    if patch is None:
        return detect_mobile_sam_type(state_dict) or detect_efficientvit_sam_type(state_dict)
    width = int(patch.shape[0])
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))), default=-1)
    for model_type in MODEL_TYPES.values():
        if (model_type.encoder_embed_dim, model_type.encoder_depth) == (width, depth):
            return model_type
    return None


def _describe_shape(state_dict: dict[str, torch.Tensor]) -> str:
    patch = state_dict.get(_PATCH_WEIGHT)
    if patch is None:
        tiny_vit = encoder_geometry(state_dict)
        if tiny_vit is not None:
            first, last, blocks = tiny_vit
            return f"TinyViT encoder widths {first}..{last}, {blocks} blocks: not a known MobileSAM type"
        efficientvit = encoder_size(state_dict)
        if efficientvit is not None:
            return f"EfficientViT encoder of {efficientvit[1]} values: not a known EfficientViT-SAM type"
        return "no SAM image encoder found in it"
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))), default=-1)
    return f"encoder width {int(patch.shape[0])}, depth {depth}: not a known SAM type"


def load_state_dict(path: Path | str, model_type: str | AnyModelType) -> dict[str, torch.Tensor]:
    """Read ``path`` and check that it holds a ``model_type`` SAM state dict."""
    import torch

    path = Path(path)
    expected = get_model_type(model_type)
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a valid PyTorch checkpoint (corrupt or truncated "
            f"download?): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    # Some training frameworks wrap the weights (EfficientViT-SAM's files may, under
    # "state_dict"); official SAM files are the bare state dict.
    for wrapper in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    found = detect_model_type(loaded)
    if found is None:
        raise CheckpointError(
            f"checkpoint {path} is not a SAM {expected.name} checkpoint ({_describe_shape(loaded)})"
        )
    if found.name != expected.name:
        raise CheckpointError(
            f"checkpoint {path} is a {found.name} checkpoint, but model type {expected.name} was "
            f"requested; use --model-type {found.name}"
        )
    return loaded


def apply_state_dict(sam: Sam, state_dict: dict[str, torch.Tensor], source: str) -> None:
    result = sam.load_state_dict(state_dict, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} tensors (e.g. {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(
            f"{len(result.unexpected_keys)} unexpected tensors (e.g. {result.unexpected_keys[0]})"
        )
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit the model: " + "; ".join(problems))

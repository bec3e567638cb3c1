"""EfficientViT-SAM's XL models (``efficientvit_sam_xl*`` model types): the ``efficientsam``
package's EfficientViT image encoder with SAM 1's prompt encoder and mask decoder.

The XL models take SAM 1's input exactly (the longest side resized to 1024 with the same PIL
resize, normalised with SAM's mean and std, zero-padded after normalising) and give its
256x64x64 embedding, so served they are SAM 1 family models: the server and the SDK need nothing
of their own. (The L models encode a 512-pixel image: a family of their own, not served yet.)
What is EfficientViT-SAM's is here: building the model with the package's own functions (and its
model zoo's norm epsilon), recognising its checkpoints, and the package's predictor as the
reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sam_triton_export.model_types import EFFICIENTVIT_SAM_MODEL_TYPES, EfficientVitSamModelType

if TYPE_CHECKING:
    import torch

NORM_EPS = 1e-6
"""What ``efficientsam.sam_model_zoo.create_efficientvit_sam_model`` sets every norm's eps to."""

_ENCODER_PREFIX = "image_encoder."


def _test_encoder() -> Any:
    """The XL models' structure (a large backbone with residual, fused-MBConv and EfficientViT
    attention stages, SamNeck over its last three stages) at a few channels per stage."""
    from efficientsam.models.efficientvit.backbone import EfficientViTLargeBackbone
    from efficientsam.models.efficientvit.sam import EfficientViTSamImageEncoder, SamNeck

    backbone = EfficientViTLargeBackbone(
        width_list=[8, 8, 16, 16, 32, 64],
        depth_list=[0, 1, 1, 1, 1, 1],
        block_list=["res", "fmb", "fmb", "fmb", "att@3", "att@3"],
        expand_list=[1, 4, 4, 4, 4, 6],
        fewer_norm_list=[False, False, False, False, True, True],
    )
    neck = SamNeck(
        fid_list=["stage5", "stage4", "stage3"],
        in_channel_list=[64, 32, 16],
        head_width=32,
        head_depth=1,
        expand_ratio=4,
        middle_op="fmb",
    )
    return EfficientViTSamImageEncoder(backbone, neck)


def instantiate_efficientvit_sam(spec: EfficientVitSamModelType) -> Any:
    """A randomly initialised, eval-mode ``EfficientViTSam`` of ``spec`` (torch's global RNG),
    with SAM's normalisation as (unsaved) ``pixel_mean``/``pixel_std`` buffers for the encoder
    graph: the package keeps them inside its torchvision transform."""
    import torch
    from efficientsam.models.efficientvit import sam as package
    from efficientsam.models.nn.norm import set_norm_eps

    if spec.builder:
        model = getattr(package, spec.builder)()
    else:
        model = package.build_efficientvit_sam(_test_encoder(), 1024)
    set_norm_eps(model, NORM_EPS)
    normalize = model.transform.transforms[2]  # ToTensor's [0, 1] scale, so x255 for uint8 pixels
    model.register_buffer("pixel_mean", torch.tensor(normalize.mean) * 255, persistent=False)
    model.register_buffer("pixel_std", torch.tensor(normalize.std) * 255, persistent=False)
    return model.eval()


def encoder_size(state_dict: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """(tensors, values) of the EfficientViT image encoder in ``state_dict``; None when it holds
    none (its keys start with ``image_encoder.backbone.stages``)."""
    encoder = [v for k, v in state_dict.items() if k.startswith(_ENCODER_PREFIX)]
    if not any(k.startswith(_ENCODER_PREFIX + "backbone.stages.") for k in state_dict):
        return None
    return len(encoder), sum(int(v.numel()) for v in encoder)


def detect_efficientvit_sam_type(state_dict: dict[str, torch.Tensor]) -> EfficientVitSamModelType | None:
    found = encoder_size(state_dict)
    for spec in EFFICIENTVIT_SAM_MODEL_TYPES.values():
        if found == (spec.encoder_tensors, spec.encoder_values):
            return spec
    return None


def is_efficientvit_sam(sam: object) -> bool:
    return type(sam).__module__.startswith("efficientsam.")

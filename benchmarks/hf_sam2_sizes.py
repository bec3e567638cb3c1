"""The eight published SAM 2 / 2.1 sizes as transformers configures them (its conversion
script's settings: facebook/sam2-hiera-* and facebook/sam2.1-hiera-*), each checked through the
exporter's Hugging Face path: config.json names the type, its settings agree with sam2's model
of that type, and every tensor of a freshly built Sam2VideoModel maps onto sam2's with its shape.
(The published weights cannot be downloaded here; the tests prove the values on a small model.)
Run from the repository root (about 30 s, 2 GB of memory at the large size):

    .venv/bin/python benchmarks/hf_sam2_sizes.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sam_triton_export import hf_sam2
from sam_triton_export.family_sam2 import instantiate_sam2
from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VideoModel, Sam2VisionConfig

# Hiera settings per size beyond the tiny one's defaults, and the FPN's input channels.
BACKBONES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {"blocks_per_stage": [1, 2, 11, 2], "global_attention_blocks": [7, 10, 13]},
    "base_plus": {
        "hidden_size": 112,
        "embed_dim_per_stage": [112, 224, 448, 896],
        "num_attention_heads_per_stage": [2, 4, 8, 16],
        "blocks_per_stage": [2, 3, 16, 3],
        "global_attention_blocks": [12, 16, 20],
        "window_positional_embedding_background_size": [14, 14],
    },
    "large": {
        "hidden_size": 144,
        "embed_dim_per_stage": [144, 288, 576, 1152],
        "num_attention_heads_per_stage": [2, 4, 8, 16],
        "blocks_per_stage": [2, 6, 36, 4],
        "global_attention_blocks": [23, 33, 43],
        "window_size_per_stage": [8, 4, 16, 8],
    },
}


def check(size: str, version: str) -> str:
    backbone = Sam2HieraDetConfig(**BACKBONES[size])
    channels = list(reversed(backbone.embed_dim_per_stage))
    sam21 = version == "2.1"
    config = Sam2VideoConfig(
        vision_config=Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=channels),
        enable_occlusion_spatial_embedding=sam21,
        enable_temporal_pos_encoding_for_object_pointers=sam21,
    )
    directory = Path(tempfile.mkdtemp())
    config.save_pretrained(directory)
    state = dict(Sam2VideoModel(config).state_dict())
    # A fresh model draws its two Fourier matrices apart; a converted checkpoint has one.
    state["shared_image_embedding.positional_embedding"] = state[
        "prompt_encoder.shared_embedding.positional_embedding"
    ]
    spec = hf_sam2.read_sam2_type(directory, hf_sam2.SAM2_VIDEO, set(state))
    model = instantiate_sam2(spec)
    hf_sam2.check_settings(directory, hf_sam2.SAM2_VIDEO, model, spec)
    target = {k: v.shape for k, v in model.state_dict().items()}
    converted = hf_sam2.convert_state_dict(state, target, spec, f"{version} {size}")
    return f"{spec.name}: {len(state)} transformers tensors -> all {len(converted)} of sam2's"


def main() -> None:
    for version in ("2.1", "2.0"):
        for size in BACKBONES:
            start = time.perf_counter()
            print(f"SAM {version} {size:9s} -> {check(size, version)} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

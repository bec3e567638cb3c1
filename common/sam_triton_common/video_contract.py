"""SAM 2 video tracking: the graphs the exporter writes and the tracker runs, and the switches
of ``SAM2VideoPredictor`` the tracker follows (:class:`TrackerConfig`).

A video model's directory holds three ONNX graphs beside the image family's encoder (whose
outputs are each frame's features) and ``tracker_config.json``:

- ``video_decoder.onnx``: prompt encoder + mask decoder on a (memory-conditioned) feature map:
  all four mask tokens' low-res logits, IoU predictions and object pointers, and the object
  score; the tracker picks among them as ``SAM2Base._forward_sam_heads`` does.
- ``memory_attention.onnx``: a frame's embedding attended to the remembered frames' memory
  features and object pointers (``SAM2Base._prepare_memory_conditioned_features``).
- ``memory_encoder.onnx``: a frame's embedding and its chosen mask -> the memory features
  remembered for it (``SAM2Base._encode_new_memory``).
- ``mask_prompt.onnx``: a mask prompt at the video's size -> the object's output on that frame
  (``add_new_mask``'s resize, then ``SAM2Base._use_mask_as_output``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from sam_triton_common.contract import HIGH_RES_FEATS, IMAGE_EMBEDDINGS

VIDEO_DECODER_FILE = "video_decoder.onnx"
MEMORY_ATTENTION_FILE = "memory_attention.onnx"
MEMORY_ENCODER_FILE = "memory_encoder.onnx"
MASK_PROMPT_FILE = "mask_prompt.onnx"
TRACKER_CONFIG_FILE = "tracker_config.json"
VIDEO_GRAPH_FILES = (VIDEO_DECODER_FILE, MEMORY_ATTENTION_FILE, MEMORY_ENCODER_FILE, MASK_PROMPT_FILE)

# video_decoder.onnx
PIX_FEAT = "pix_feat"
"""FP32 [1, 256, h, w]: the frame's embedding, memory-conditioned unless it starts an object."""
TRACK_POINT_COORDS = "point_coords"
"""FP32 [1, N, 2]: points in the model's square input pixels (the graph appends the padding point)."""
TRACK_POINT_LABELS = "point_labels"
"""FP32 [1, N]: 1 foreground, 0 background, 2/3 box corners, -1 no point."""
TRACK_MASK_INPUT = "mask_input"
"""FP32 [1, 1, 4h, 4w]: a mask prompt in low-res logits (the previous prediction on a click)."""
TRACK_HAS_MASK_INPUT = "has_mask_input"
"""FP32 [1]: 1 when ``mask_input`` is a prompt, else 0."""
ALL_MASK_LOGITS = "all_mask_logits"
"""FP32 [1, 4, 4h, 4w]: every mask token's logits (token 0 single-mask, 1-3 multimask)."""
ALL_IOU_PREDICTIONS = "all_iou_predictions"
"""FP32 [1, 4]."""
ALL_OBJECT_POINTERS = "all_object_pointers"
"""FP32 [1, 4, 256]: each token's object pointer, already mixed with ``no_obj_ptr`` by the score."""
OBJECT_SCORE_LOGITS = "object_score_logits"
"""FP32 [1, 1]: > 0 where the object is visible (the occlusion score)."""
VIDEO_DECODER_INPUTS = (
    PIX_FEAT,
    *HIGH_RES_FEATS,
    TRACK_POINT_COORDS,
    TRACK_POINT_LABELS,
    TRACK_MASK_INPUT,
    TRACK_HAS_MASK_INPUT,
)
VIDEO_DECODER_OUTPUTS = (ALL_MASK_LOGITS, ALL_IOU_PREDICTIONS, ALL_OBJECT_POINTERS, OBJECT_SCORE_LOGITS)

# memory_attention.onnx
MEMORY_FEATURES = "memory_features"
"""FP32 [M, 64, h, w]: the remembered frames' memory features (stored as bfloat16, read as fp32)."""
MEMORY_TPOS = "memory_tpos"
"""INT64 [M]: each memory's row of ``maskmem_tpos_enc`` (0: the previous frame ... num_maskmem-1:
a conditioning frame)."""
OBJECT_POINTERS = "object_pointers"
"""FP32 [P, 256]: the remembered object pointers."""
OBJECT_POINTER_POSITIONS = "object_pointer_positions"
"""FP32 [P]: each pointer's temporal offset divided by ``max_obj_ptrs - 1``."""
CONDITIONED_FEATURES = "conditioned_features"
"""FP32 [1, 256, h, w]: the frame's features after memory attention (the decoder's ``pix_feat``)."""
MEMORY_ATTENTION_INPUTS = (
    IMAGE_EMBEDDINGS,
    MEMORY_FEATURES,
    MEMORY_TPOS,
    OBJECT_POINTERS,
    OBJECT_POINTER_POSITIONS,
)
MEMORY_ATTENTION_OUTPUTS = (CONDITIONED_FEATURES,)

# memory_encoder.onnx
MASK_LOGITS = "mask_logits"
"""FP32 [1, 1, 4h, 4w]: the frame's chosen low-res mask logits."""
BINARIZE_MASK = "binarize_mask"
"""BOOL [1]: encode the mask as 0/1 (a prompted frame) instead of its sigmoid."""
MEMORY_ENCODER_INPUTS = (IMAGE_EMBEDDINGS, MASK_LOGITS, OBJECT_SCORE_LOGITS, BINARIZE_MASK)
MEMORY_ENCODER_OUTPUTS = (MEMORY_FEATURES,)

# mask_prompt.onnx
PROMPT_MASK = "prompt_mask"
"""FP32 [H, W]: the mask prompt at the video's size, 1 inside the object, 0 outside."""
LOW_RES_MASK = "low_res_mask"
"""FP32 [1, 1, 4h, 4w]: the mask as the frame's output logits (+10 inside, -10 outside, resized)."""
OBJECT_POINTER = "object_pointer"
"""FP32 [1, 256]: the object pointer the mask makes."""
MASK_PROMPT_INPUTS = (IMAGE_EMBEDDINGS, PROMPT_MASK)
MASK_PROMPT_OUTPUTS = (LOW_RES_MASK, OBJECT_POINTER, OBJECT_SCORE_LOGITS)

NO_OBJ_SCORE = -1024.0
"""Logits of a mask whose object is not visible (``sam2.modeling.sam2_base.NO_OBJ_SCORE``)."""


@dataclass(frozen=True)
class TrackerConfig:
    """The ``SAM2VideoPredictor`` switches that decide what the tracker computes; the exporter
    writes the exported model's values, the tracker reads them."""

    image_size: int = 1024
    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    hidden_dim: int = 256
    mem_dim: int = 64
    multimask_output_in_sam: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    use_multimask_token_for_obj_ptr: bool = True
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    binarize_mask_from_pts_for_mem_enc: bool = True
    fill_hole_area: int = 8
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True

    @property
    def low_res_size(self) -> int:
        return self.image_size // 4

    @property
    def feature_size(self) -> int:
        return self.image_size // 16

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrackerConfig:
        """Unknown keys are refused: a config from a newer exporter must not be half-read."""
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown tracker config keys: {unknown}")
        return cls(**values)

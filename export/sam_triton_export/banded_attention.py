"""SAM 1's global image-encoder attention computed a band of query rows at a time.

A global-attention block of the ViT attends over all 64 x 64 = 4096 tokens at once, so
``segment_anything``'s ``Attention.forward`` materialises the heads x 4096 x 4096 attention matrix
(and its relative-position bias, of the same size): 805 MB in fp32 for vit_b's 12 heads. A CPU
runtime plans its memory for that peak and keeps it for the life of the model (OpenVINO held
1.7 GB for vit_b's encoder, 0.9 GB of it activations).

Every query row of an attention is its own softmax over all keys, so the rows can be computed in
bands: each band's scores, relative-position terms, softmax and weighted sum are the same sums
over the same operands as in the full matrix (OpenVINO's output is bit-identical). Four bands cut
the peak to a quarter; ``sam-triton verify`` holds the exported graph to the reference model.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

QUERY_BANDS = 4
"""Bands of query rows per global attention (64 rows of tokens -> 16 rows per band)."""


def banded_attention_forward(attention: Any, x: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` (with relative positions, no windows) a band of query rows at a time."""
    import torch
    from segment_anything.modeling.image_encoder import get_rel_pos

    batch, height, width, _ = x.shape
    qkv = attention.qkv(x).reshape(batch, height * width, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, batch * attention.num_heads, height * width, -1).unbind(0)
    rows_h = get_rel_pos(height, height, attention.rel_pos_h)
    rows_w = get_rel_pos(width, width, attention.rel_pos_w)
    k_t = k.transpose(-2, -1)
    band = -(-height // QUERY_BANDS)
    outputs = []
    for top in range(0, height, band):
        rows = min(band, height - top)
        q_band = q[:, top * width : (top + rows) * width]
        scores = (q_band * attention.scale) @ k_t
        r_q = q_band.reshape(q.shape[0], rows, width, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rows_h[top : top + rows])
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rows_w)
        scores = (
            scores.view(q.shape[0], rows, width, height, width)
            + rel_h[:, :, :, :, None]
            + rel_w[:, :, :, None, :]
        ).view(q.shape[0], rows * width, height * width)
        outputs.append(scores.softmax(dim=-1) @ v)
    out = torch.cat(outputs, dim=1)
    out = out.view(batch, attention.num_heads, height, width, -1).permute(0, 2, 3, 1, 4)
    projected: torch.Tensor = attention.proj(out.reshape(batch, height, width, -1))
    return projected


@contextmanager
def banded_global_attention(image_encoder: Any) -> Iterator[None]:
    """Every global-attention block of a SAM 1 image encoder runs the banded forward inside the
    block, its own forward again after it (the same model is the reference in ``verify``)."""
    banded = [
        block.attn
        # MobileSAM's TinyViT has no ViT blocks: only windowed attention, nothing to band.
        for block in getattr(image_encoder, "blocks", ())
        if block.window_size == 0 and block.attn.use_rel_pos
    ]
    for attention in banded:
        attention.forward = types.MethodType(banded_attention_forward, attention)
    try:
        yield
    finally:
        for attention in banded:
            del attention.forward

"""segment_anything's ``Attention.forward`` between the few prompt tokens and the 4096 image tokens,
with its matrix products reassociated so the image side is never projected.

In the decoder's cross attentions one side has T tokens (5 output tokens + the points: 7 for a
click) and the other 4096 image tokens of width 256; the module projects the image side to the
attention width (128) with 4096 x 256 x 128 multiply-adds per projection, two per attention.
Folding each head's projection weights into the small side instead costs 4096 x 256 x (heads x T)
per product (8 x 7 = 56 columns for a click): the same sums in a different order, 0.44x the work.

- tokens attend to the image: ``q_h . (W_k,h x + b_k,h) = (q_h W_k,h) . x + q_h . b_k,h``; the last
  term is the same for every image token, so the softmax cancels it. The weights of a softmax row
  sum to one, so ``sum_i a_i (W_v,h x_i + b_v,h) = W_v,h (sum_i a_i x_i) + b_v,h``.
- the image attends to tokens: ``(W_q,h x + b_q,h) . k_h = x . (W_q,h^T k_h) + b_q,h . k_h``, and the
  output projection of the head outputs is the per-head sum ``sum_h a_h (v_h W_o,h^T)``.

It pays while heads x T stays below the attention width (T < 16); prompts with more points still
get the right answer, only less of the saving. ``verify`` checks this graph against the full
decoder, which runs the modules as written.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def separate_heads(attention: Any, x: torch.Tensor) -> torch.Tensor:
    """[B, N, heads x d] -> [B, heads, N, d], as the module does it."""
    heads: torch.Tensor = attention._separate_heads(x, attention.num_heads)
    return heads


def tokens_to_projected_image(
    attention: Any, q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """``attention(q=q, ...)`` with the image side already projected and head-separated:
    k_t [1, H, d, 4096] (transposed), v [1, H, 4096, d]."""
    import torch

    q_heads = separate_heads(attention, attention.q_proj(q))
    weights = torch.softmax((q_heads @ k_t) / math.sqrt(q_heads.shape[-1]), dim=-1)
    out: torch.Tensor = attention.out_proj(attention._recombine_heads(weights @ v))
    return out


def _head_weights(linear: Any, heads: int) -> torch.Tensor:
    """A projection's weight [heads x d, C] as [heads, d, C]."""
    weight: torch.Tensor = linear.weight
    return weight.reshape(heads, weight.shape[0] // heads, weight.shape[1])


def tokens_to_image(attention: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attention(q=q, k=k, v=v)`` for q [B, T, C] tokens and k, v [B or 1, 4096, C] image tokens."""
    import torch

    heads = attention.num_heads
    q_heads = separate_heads(attention, attention.q_proj(q))  # [B, H, T, d]
    batch, _, tokens, width = q_heads.shape
    folded = q_heads @ _head_weights(attention.k_proj, heads)  # [B, H, T, C]
    scores = folded.reshape(batch, heads * tokens, -1) @ k.transpose(1, 2)  # [B, H*T, 4096]
    weights = torch.softmax(scores / math.sqrt(width), dim=-1)
    mixed = (weights @ v).reshape(batch, heads, tokens, -1)  # [B, H, T, C]
    w_v = _head_weights(attention.v_proj, heads).transpose(1, 2)  # [H, C, d]
    out = mixed @ w_v + attention.v_proj.bias.reshape(heads, 1, width)
    result: torch.Tensor = attention.out_proj(attention._recombine_heads(out))
    return result


def _block_diagonal(k_heads: torch.Tensor) -> torch.Tensor:
    """Keys [B, H, T, d] as the block-diagonal [B, H*d, H*T] that gives every head's scores from
    the heads' concatenated queries in one product (the off-diagonal blocks add exact zeros)."""
    import torch

    batch, heads, tokens, width = k_heads.shape
    eye = torch.eye(heads, dtype=k_heads.dtype).reshape(1, heads, 1, heads, 1)
    blocks = k_heads.transpose(2, 3).unsqueeze(3) * eye  # [B, H, d, H, T]
    return blocks.reshape(batch, heads * width, heads * tokens)


def _image_to_tokens_output(attention: Any, scores: torch.Tensor, v_heads: torch.Tensor) -> torch.Tensor:
    """Softmax over each head's tokens and the output projection, from raw scores [B, 4096, H*T]
    (the layout the output product wants: no transposes of 4096-row tensors)."""
    import torch

    batch, heads, tokens, width = v_heads.shape
    weights = torch.softmax(scores.reshape(batch, -1, heads, tokens) / math.sqrt(width), dim=-1)
    w_o = attention.out_proj.weight  # [C, H*d]
    w_o_heads = w_o.reshape(w_o.shape[0], heads, width).permute(1, 2, 0)  # [H, d, C]
    # Each head's weights sum to one, so the H heads' rows together add out_proj's bias once:
    # an add on H*T rows instead of on 4096.
    values = v_heads @ w_o_heads + attention.out_proj.bias / heads  # [B, H, T, C]
    out: torch.Tensor = weights.reshape(batch, -1, heads * tokens) @ values.reshape(batch, heads * tokens, -1)
    return out


def image_to_tokens(attention: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attention(q=q, k=k, v=v)`` for q [B, 4096, C] image tokens and k, v [B, T, C] tokens."""
    heads = attention.num_heads
    k_heads = separate_heads(attention, attention.k_proj(k))  # [B, H, T, d]
    batch, _, tokens, width = k_heads.shape
    w_q = _head_weights(attention.q_proj, heads).transpose(1, 2)  # [H, C, d]
    folded = (w_q @ k_heads.transpose(2, 3)).permute(0, 2, 1, 3)  # [B, C, H, T]
    bias = attention.q_proj.bias.reshape(heads, 1, width) @ k_heads.transpose(2, 3)  # [B, H, 1, T]
    scores = q @ folded.reshape(batch, -1, heads * tokens) + bias.reshape(batch, 1, heads * tokens)
    return _image_to_tokens_output(attention, scores, separate_heads(attention, attention.v_proj(v)))


def projected_image_to_tokens(
    attention: Any, projected_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """``image_to_tokens`` with the image side's queries already projected: ``projected_q``
    [1, 4096, H*d] is ``attention.q_proj(q)`` (layer 0 without a mask prompt, once per image)."""
    k_heads = separate_heads(attention, attention.k_proj(k))  # [B, H, T, d]
    scores = projected_q @ _block_diagonal(k_heads)
    return _image_to_tokens_output(attention, scores, separate_heads(attention, attention.v_proj(v)))

"""The prompt decoder's reassociated cross attentions against segment_anything's ``Attention``
with the same weights: both directions, the precomputed-query path, several prompts and point
counts (including more tokens than the attention width, where the saving is gone but the
answer must not change)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sam_triton_export.reassociated_attention import (
    image_to_tokens,
    projected_image_to_tokens,
    tokens_to_image,
)
from segment_anything.modeling.transformer import Attention

IMAGE_TOKENS = 4096
Reassociated = Callable[[Attention, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@pytest.fixture(scope="module")
def attention() -> Attention:
    torch.manual_seed(0)
    module = Attention(256, 8, downsample_rate=2).eval()
    with torch.no_grad():  # non-zero biases, so dropping or moving them would show
        for linear in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
            linear.bias.normal_()
    return module


@pytest.mark.parametrize("direction", [tokens_to_image, image_to_tokens])
@pytest.mark.parametrize(("prompts", "tokens"), [(1, 7), (3, 6), (2, 20)])
def test_matches_the_module(attention: Attention, direction: Reassociated, prompts: int, tokens: int) -> None:
    """tokens_to_image: q are the tokens, k and v the image; image_to_tokens the other way round."""
    gen = torch.Generator().manual_seed(prompts * 100 + tokens)
    query_rows, key_rows = (tokens, IMAGE_TOKENS) if direction is tokens_to_image else (IMAGE_TOKENS, tokens)
    q = torch.randn(prompts, query_rows, 256, generator=gen)
    k = torch.randn(prompts, key_rows, 256, generator=gen)
    v = torch.randn(prompts, key_rows, 256, generator=gen)
    with torch.no_grad():
        expected, actual = attention(q=q, k=k, v=v), direction(attention, q, k, v)
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=0)


def test_image_to_tokens_on_projected_queries_of_one_image(attention: Attention) -> None:
    """Layer 0 without a mask: one image's projected queries serve every prompt."""
    gen = torch.Generator().manual_seed(5)
    image = torch.randn(1, IMAGE_TOKENS, 256, generator=gen)
    k = torch.randn(3, 7, 256, generator=gen)
    v = torch.randn(3, 7, 256, generator=gen)
    with torch.no_grad():
        expected = attention(q=image.expand(3, -1, -1), k=k, v=v)
        actual = projected_image_to_tokens(attention, attention.q_proj(image), k, v)
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=0)

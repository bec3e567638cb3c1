"""The encoder's global attention computed in bands of query rows equals segment_anything's own.

The exported graph's parity with the reference as a whole is held by the export and verify
tests; these check the rewrite itself, on sizes the real models never have (bands of unequal
height) and on the real tiny-test encoder, and that the reference model is left as it was.
"""

from __future__ import annotations

import torch
from sam_triton_export.banded_attention import QUERY_BANDS, banded_attention_forward, banded_global_attention
from sam_triton_export.model_builder import build_sam
from segment_anything.modeling.image_encoder import Attention


def _attention(size: int) -> Attention:
    torch.manual_seed(0)
    attention = Attention(32, num_heads=2, use_rel_pos=True, input_size=(size, size))
    with torch.no_grad():  # zero-initialised in the module; random here so they count
        attention.rel_pos_h.normal_()
        attention.rel_pos_w.normal_()
    return attention.eval()


def test_bands_of_unequal_height_give_the_modules_answer() -> None:
    """Broken on purpose (rel_h of the first band for every band) this fails by ~1e0."""
    for size in (QUERY_BANDS * 3, 10, 3):  # equal bands, a short last band, fewer rows than bands
        attention = _attention(size)
        x = torch.randn(2, size, size, 32)
        with torch.no_grad():
            expected = attention(x)
            banded = banded_attention_forward(attention, x)
        torch.testing.assert_close(banded, expected, rtol=1e-5, atol=1e-5)


def test_the_real_encoder_inside_the_block_and_the_reference_after_it() -> None:
    sam = build_sam("tiny-test", random_seed=0)
    encoder = sam.image_encoder
    image = torch.randn(1, 3, 1024, 1024)
    global_blocks = [b.attn for b in encoder.blocks if b.window_size == 0]
    assert global_blocks, "tiny-test must have a global-attention block for this test to mean anything"
    with torch.no_grad():
        expected = encoder(image)
        with banded_global_attention(encoder):
            assert all("forward" in vars(a) for a in global_blocks)
            banded = encoder(image)
        assert not any("forward" in vars(a) for a in global_blocks), "the reference stays unpatched"
        again = encoder(image)
    torch.testing.assert_close(banded, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, expected)

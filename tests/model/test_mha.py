import pytest
import torch
from torch import nn

from ovt.model import ModelParams, build_base
from ovt.model.mha import UnfusedMultiheadAttention, swap_mha


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unfused_matches_mha(batch_first, dtype):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first, dtype=dtype)
    with torch.no_grad():  # non-zero biases so a forgotten bias copy shows
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    mha.eval()
    x = torch.randn(3, 5, 32, dtype=dtype)
    new = UnfusedMultiheadAttention.from_mha(mha)
    assert new.batch_first == batch_first and new.qkv.weight.dtype == dtype
    ref = mha(x, x, x, need_weights=False)[0]
    out = new(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(out, ref)


def test_bool_and_float_masks_match():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    new = UnfusedMultiheadAttention.from_mha(mha)
    x = torch.randn(2, 4, 16)
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    torch.testing.assert_close(new(x, x, x, attn_mask=mask)[0], mha(x, x, x, attn_mask=mask, need_weights=False)[0])


def test_swap_keeps_tiny_clip_outputs():
    base = build_base(ModelParams(arch="tiny-test"))
    clip = base.model
    x = torch.randn(2, 3, 32, 32)
    tokens = base.tokenizer(["a chair", "a lamp"])
    img, txt = clip.encode_image(x), clip.encode_text(tokens)
    swapped = swap_mha(clip, r"visual\.transformer\.resblocks\.\d+\.attn")
    assert swapped == ["visual.transformer.resblocks.0.attn", "visual.transformer.resblocks.1.attn"]
    assert isinstance(clip.visual.transformer.resblocks[0].attn, UnfusedMultiheadAttention)
    assert isinstance(clip.transformer.resblocks[0].attn, nn.MultiheadAttention)  # text tower untouched
    torch.testing.assert_close(clip.encode_image(x), img)
    torch.testing.assert_close(clip.encode_text(tokens), txt)


def test_rejects_cross_attention():
    new = UnfusedMultiheadAttention(8, 2)
    q, k = torch.randn(3, 1, 8), torch.randn(3, 1, 8)
    with pytest.raises(ValueError, match="self-attention"):
        new(q, k, k)

"""The paper's trainable count for ViT-B-32 (no weights needed): LoRA r=8 on fused qkv + 2x VIFormer(4, 2048) + scale."""

from ovt.model import LoraParams, ModelParams, VIFormerParams, build_base, build_ovt_model


def _count(placement: str) -> int:
    cfg = ModelParams(
        arch="ViT-B-32",
        pretrained=None,
        lora=LoraParams(placement=placement, r=8, alpha=8, last_blocks=None),
        viformer=VIFormerParams(layers=2, heads=4, ffn=2048),
    )
    model = build_ovt_model(cfg, build_base(cfg))
    n = model.count_trainable()
    print(f"ViT-B-32 placement={placement}: {n:,} trainable parameters")
    return n


def test_vit_b32_qkv_matches_paper():
    assert _count("qkv") == 6_599_681


def test_vit_b32_native_attn_adapts_out_proj_too():
    # peft's MHA LoRA also adapts out_proj: 6rd per block (anchors: 6,747,137, not the paper's count)
    assert _count("attn") == 6_747_137


def test_missing_pretrained_weights_name_arch_tag_and_places():
    import pytest

    cfg = ModelParams(arch="ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(FileNotFoundError, match=r"ViT-B-32 / 'laion2b_s34b_b79k'.*looked in"):
        build_base(cfg)
    with pytest.raises(ValueError, match="neither a file nor a tag"):
        build_base(ModelParams(arch="ViT-B-32", pretrained="no-such-tag"))
    with pytest.raises(ValueError, match="not an open_clip architecture"):
        build_base(ModelParams(arch="ViT-Nope"))

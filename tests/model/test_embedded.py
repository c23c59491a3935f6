import pytest
import timm
import torch
import torch.nn.functional as F

from ovt.model import LoraParams, ModelParams, VIFormerParams, build_base, build_ovt_model
from ovt.model.embedded import STAGE_SIZES, load_efficientnet_lite0_state, remap_efficientnet_lite0
from ovt.model.lora import adapted_module_names

from .conftest import randomise_lora


def test_remap_loads_with_no_missing_or_unexpected_keys():
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    result = net.load_state_dict(load_efficientnet_lite0_state(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert [len(s) for s in net.blocks] == list(STAGE_SIZES)


def test_remap_names_bad_keys():
    with pytest.raises(KeyError, match="_blocks.0._expand_conv"):
        remap_efficientnet_lite0({"_blocks.0._expand_conv.weight": torch.zeros(1)})


@pytest.fixture(scope="module")
def embedded_model():
    cfg = ModelParams(
        embed_dim=64,
        image_size=64,
        lora=LoraParams(placement="conv", last_blocks=2),
        viformer=VIFormerParams(heads=4, ffn=64),
    )
    model = build_ovt_model(cfg, build_base(cfg))
    randomise_lora(model, std=0.02)
    return model


def test_conv_placement_pointwise_only(embedded_model):
    adapted = adapted_module_names(embedded_model.clip)
    assert adapted == [
        "visual.trunk.blocks.5.3.conv_pw",
        "visual.trunk.blocks.5.3.conv_pwl",
        "visual.trunk.blocks.6.0.conv_pw",
        "visual.trunk.blocks.6.0.conv_pwl",
        "visual.trunk.conv_head",
    ]
    assert embedded_model.first_adapted == sum(STAGE_SIZES) - 2
    assert all(embedded_model.clip.get_submodule(n).base_layer.groups == 1 for n in adapted)


def test_conv_gradients_split_and_merge(embedded_model):
    model = embedded_model
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model.eval()
    split_out = model.encode_image(x)
    torch.testing.assert_close(model.image_tail(model.image_prefix(x)), split_out)
    k, model.first_adapted = model.first_adapted, -1  # the tail is then open_clip's own TimmModel.forward
    torch.testing.assert_close(model.encode_image(x), split_out)
    model.first_adapted = k
    model.train()  # VIFormer dropout on, BatchNorm of the frozen tower still on running statistics
    assert not any(m.training for m in model.clip.modules() if isinstance(m, torch.nn.BatchNorm2d))
    z = model.encode_image(x)
    text = model.encode_text(["a 3D render of a chair.", "a 3D render of a lamp."])
    F.cross_entropy(model.logit_scale.exp() * z @ text.T, torch.arange(2)).backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())
    model.eval()
    torch.testing.assert_close(model.merged().encode_image(x), model.encode_image(x), atol=1e-5, rtol=1e-4)


def test_conv_lora_folds_for_inference(embedded_model):
    """The max step's pass: conv LoRA folded into the base weights gives the unfolded embeddings."""
    model = embedded_model.eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        prefix = model.image_prefix(x)
        ref = model.image_tail(prefix)
        with model.folded_adapters() as folded:
            out = model.image_tail(prefix)
    assert folded == len(adapted_module_names(model.clip)) == 5
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert adapted_module_names(model.clip)[0] == "visual.trunk.blocks.5.3.conv_pw"  # the LoRA layers are back


def test_text_tower_has_no_adapter_and_is_frozen(embedded_model):
    assert not any(p.requires_grad for n, p in embedded_model.clip.named_parameters() if n.startswith("text."))


@pytest.mark.parametrize("k_offset", [0, -3])
def test_channels_last_activations_change_layout_not_values(embedded_model, monkeypatch, k_offset):
    """The split runs its convolutions on channels-last activations (faster on CPU); the values must be NCHW's."""
    from ovt.model import towers

    split = embedded_model.eval().split
    k = embedded_model.first_adapted + k_offset
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast_prefix, fast = split.prefix(x, k), split.tail(split.prefix(x, k), k)
        assert fast_prefix.is_contiguous(memory_format=torch.channels_last)
        monkeypatch.setattr(towers, "CHANNELS_LAST", False)
        ref_prefix, ref = split.prefix(x, k), split.tail(split.prefix(x, k), k)
    assert ref_prefix.is_contiguous()
    # other kernels, other summation order: float32 rounding only
    torch.testing.assert_close(fast_prefix, ref_prefix, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-3)

import pytest
import torch
import torch.nn.functional as F

from ovt.model import OVTModel, build_base
from ovt.model.lora import adapted_module_names

from .conftest import make_tiny, tiny_cfg

PLACEMENTS = ["qkv", "attn"]


def _lora_params(model):
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_lora_only_on_image_tower_and_text_frozen(placement):
    model = make_tiny(placement)
    adapted = adapted_module_names(model.clip)
    assert adapted and all(n.startswith("visual.") for n in adapted)
    trainable = {n for n, _ in model.named_trainable_parameters()}
    assert all("lora_" in n or n.startswith("viformer.") or n == "logit_scale" for n in trainable)
    assert all(n.startswith("backbone.base_model.model.visual.") for n in trainable if "lora_" in n)
    # one registered owner of the base weights: no duplicated tensors in state_dict
    assert all(k.startswith(("backbone.", "viformer.", "logit_scale")) for k in model.state_dict())


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_gradients_reach_every_lora_tensor(placement, images):
    model = make_tiny(placement).train()
    text = model.encode_text(["a chair", "a lamp", "a sofa", "a bed"])
    logits = model.logit_scale.exp() * model.encode_image(images) @ text.T
    F.cross_entropy(logits, torch.arange(4)).backward()
    lora = _lora_params(model)
    no_grad = [n for n, p in lora.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert lora and not no_grad, f"LoRA tensors without gradient: {no_grad}"
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_out_proj_trap_is_detectable(images):
    """Targeting out_proj alone (the trap) leaves LoRA tensors with no gradient: the check above would catch it."""
    model = make_tiny("attn", lora={"targets": [r"visual.transformer.resblocks.0.attn.out_proj"]})
    model.encode_image(images).sum().backward()
    assert any(p.grad is None for p in _lora_params(model).values())


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_prefix_tail_split(placement, images):
    model = make_tiny(placement, lora={"last_blocks": 1})
    assert model.first_adapted == 1
    prefix = model.image_prefix(images)
    assert not prefix.requires_grad
    torch.testing.assert_close(model.image_tail(prefix), model.encode_image(images))
    split_out = model.encode_image(images)
    model.first_adapted = -1  # run the whole tower in the tail: same numbers
    torch.testing.assert_close(model.encode_image(images), split_out)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_scale_zero_gives_base_outputs(placement, images):
    model = make_tiny(placement)
    base = build_base(tiny_cfg(placement))  # same seed -> same base weights
    model.set_adapter_scale(0.0)
    torch.testing.assert_close(model.encode_image(images), F.normalize(base.model.encode_image(images), dim=-1))
    model.set_adapter_scale(1.0)
    assert not torch.allclose(model.encode_image(images), F.normalize(base.model.encode_image(images), dim=-1))
    with pytest.raises(ValueError):
        model.set_adapter_scale(1.5)


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_merged_matches_unmerged(placement, scale, images):
    model = make_tiny(placement)
    model.set_adapter_scale(scale)
    merged = model.merged()
    assert merged.peft is None and not adapted_module_names(merged.clip)
    torch.testing.assert_close(merged.encode_image(images), model.encode_image(images), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode_image(images), model.encode_image(images))  # original kept unmerged


def test_merged_qkv_equals_hand_built_delta():
    model = make_tiny("qkv", lora={"r": 4, "alpha": 8})
    layer = model.clip.visual.transformer.resblocks[0].attn.qkv
    w0 = layer.base_layer.weight.detach().clone()
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    expect = w0 + (8 / 4) * b @ a
    x = torch.randn(3, w0.shape[1])
    torch.testing.assert_close(layer(x), F.linear(x, expect, layer.base_layer.bias))
    merged = model.merged()
    torch.testing.assert_close(merged.clip.visual.transformer.resblocks[0].attn.qkv.weight, expect)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_save_load_round_trip(placement, images, tmp_path):
    model = make_tiny(placement)
    with torch.no_grad():
        model.logit_scale.fill_(3.3)
        for p in model.viformer.parameters():
            p.add_(0.01)
    model.save(tmp_path / "variant")
    assert (tmp_path / "variant/adapter/adapter_config.json").is_file()
    assert (tmp_path / "variant/adapter/adapter_model.safetensors").is_file()
    loaded = OVTModel.load(tmp_path / "variant")
    torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images))
    assert loaded.logit_scale.item() == pytest.approx(3.3)
    assert loaded.count_trainable() == model.count_trainable()


def test_peft_from_pretrained_reads_our_adapter(images, tmp_path):
    """The adapter folder is plain peft format: PeftModel.from_pretrained on a re-swapped base reproduces it."""
    from peft import PeftModel

    from ovt.model.lora import prepare_base
    from ovt.model.towers import tower_split

    model = make_tiny("qkv")
    model.save(tmp_path)
    cfg = tiny_cfg("qkv")
    clip = build_base(cfg).model
    prepare_base(clip, tower_split(clip), cfg.lora)
    peft_model = PeftModel.from_pretrained(clip, tmp_path / "adapter")
    z = peft_model.base_model.model.encode_image(images)
    torch.testing.assert_close(model.viformer(z), model.encode_image(images))


def test_new_logit_scale_init_and_frozen_alternative():
    model = make_tiny("qkv")
    assert model.logit_scale.requires_grad and model.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    kept = make_tiny("qkv", new_logit_scale=False)
    assert not kept.logit_scale.requires_grad
    assert kept.count_trainable() == model.count_trainable() - 1


def test_text_encoding_is_cached_and_normalised():
    model = make_tiny("qkv")
    t1 = model.encode_text(["a chair", "a lamp", "a chair"])
    torch.testing.assert_close(t1.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(t1[0], t1[2])
    assert set(model._text_cache) == {"a chair", "a lamp"}
    with pytest.raises(TypeError):
        model.encode_text("a chair")


def test_train_mode_keeps_base_in_eval():
    model = make_tiny("qkv").train()
    assert model.training and model.viformer.training and not model.clip.training


def test_placement_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a efficientnet image tower"):
        make_tiny("conv")
    with pytest.raises(ValueError, match="last_blocks=5"):
        make_tiny("qkv", lora={"last_blocks": 5})


def _snapshot(model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        dict(model.named_modules()),
    )


def _assert_unchanged(model, snap, weights: bool = True):
    params, flags, modules = snap
    assert not weights or all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert dict(model.named_modules()).keys() == modules.keys()
    assert all(m is modules[n] for n, m in model.named_modules())


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_folded_adapters_match_unfolded_and_leave_the_model_as_it_was(placement, scale, images):
    model = make_tiny(placement).eval()
    model.set_adapter_scale(scale)
    snap = _snapshot(model)
    with torch.no_grad():  # the same autograd mode both ways (MHA takes another kernel path under no_grad)
        ref = model.encode_image(images)
        with model.folded_adapters() as folded:
            out = model.encode_image(images)
    if placement == "qkv":  # plain Linear LoRA: folded
        assert folded == len(adapted_module_names(model.clip)) > 0
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    else:  # peft's MultiheadAttention LoRA is not a plain W + ΔW layer: runs unfolded
        assert folded == 0
        torch.testing.assert_close(out, ref)
    # (peft's MHA LoRA merges and unmerges its weights in every forward: they drift by rounding, folded or not)
    _assert_unchanged(model, snap, weights=placement != "attn")
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), ref, atol=0 if placement == "qkv" else 1e-6, rtol=0)


def test_folding_refuses_active_lora_dropout_and_restores_on_error(images):
    model = make_tiny("qkv", lora={"dropout": 0.5}).train()
    with model.folded_adapters() as folded:
        assert folded == 0  # dropout on the adapter branch only: W + ΔW would not be the same function
    model.eval()
    snap = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), model.folded_adapters() as folded:
        assert folded > 0
        assert not any("lora_" in n for n, _ in model.clip.named_modules())  # the adapter layers are swapped out
        raise RuntimeError("boom")
    _assert_unchanged(model, snap)


def test_folding_without_lora_is_a_no_op(images):
    model = make_tiny("qkv", lora={"enabled": False})
    with model.folded_adapters() as folded:
        assert folded == 0

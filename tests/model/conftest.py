import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from ovt.model import LoraParams, ModelParams, VIFormerParams, build_base, build_ovt_model


def tiny_cfg(placement: str = "qkv", **kw) -> ModelParams:
    lora = dict(placement=placement, last_blocks=None)
    lora.update(kw.pop("lora", {}))
    return ModelParams(arch="tiny-test", lora=LoraParams(**lora), viformer=VIFormerParams(heads=4, ffn=64), **kw)


def randomise_lora(model, seed: int = 0, std: float = 0.05) -> None:
    """peft initialises B = 0 (so A gets no gradient and merges are no-ops); give every LoRA tensor a value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def make_tiny(placement: str = "qkv", randomise: bool = True, **kw):
    cfg = tiny_cfg(placement, **kw)
    model = build_ovt_model(cfg, build_base(cfg))
    if randomise:
        randomise_lora(model)
    return model


@pytest.fixture
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))

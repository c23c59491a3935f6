import pytest

from ovt.model import BootstrapParams, ModelParams
from ovt.params_base import ParamsError, validate_block


def test_defaults_are_the_embedded_default():
    cfg = ModelParams()
    assert (cfg.arch, cfg.lora.placement, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == ("embedded", "conv", 8, 8, 0)
    assert (cfg.viformer.layers, cfg.viformer.heads, cfg.viformer.ffn, cfg.viformer.alpha, cfg.viformer.mix) == (
        2,
        4,
        2048,
        0.1,
        "code",
    )
    assert cfg.new_logit_scale and cfg.log_scale_init == pytest.approx(2.6593, abs=1e-4)


def test_typos_and_bad_values_are_named():
    with pytest.raises(ParamsError, match=r"model\.lora\.rank: unknown key"):
        validate_block(ModelParams, {"lora": {"rank": 4}}, name="model")
    with pytest.raises(ParamsError, match=r"model\.lora\.placement"):
        validate_block(ModelParams, {"lora": {"placement": "mlp"}}, name="model")
    with pytest.raises(ParamsError, match="not divisible"):
        validate_block(ModelParams, {"embed_dim": 30}, name="model")
    with pytest.raises(ParamsError, match="templates"):
        validate_block(BootstrapParams, {"templates": ["no slot"]}, name="bootstrap")

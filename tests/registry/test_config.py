import pytest

from ovt.params_base import ParamsError, validate_block
from ovt.registry.config import RegisterParams


def test_defaults_are_valid_and_frozen():
    cfg = RegisterParams()
    assert cfg.variant == "ovt" and cfg.challenger_alias == "challenger" and cfg.champion_alias == "champion"
    with pytest.raises(Exception):
        cfg.variant = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "block, needle",
    [
        ({"champion_alias": "latest"}, "champion_alias"),
        ({"challenger_alias": "v3"}, "challenger_alias"),
        ({"challenger_alias": "champion"}, "must differ"),
        ({"gate": {"worst_view_margin": -0.1}}, "registry.gate.worst_view_margin"),
        ({"gate": {"margin": 0.1}}, "allowed keys"),
        ({"schedule": {"cron": "every day"}}, "5 space-separated"),
        ({"eval_protocol_paths": ["nope"]}, "nope"),
        ({"prompt_template": "no slot"}, "slot"),
    ],
)
def test_bad_params_are_named(block, needle):
    with pytest.raises(ParamsError, match=needle):
        validate_block(RegisterParams, block, name="registry")

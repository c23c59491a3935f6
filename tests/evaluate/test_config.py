import pytest

from ovt.evaluate.config import AdversarialParams, EvaluateParams
from ovt.params_base import ParamsError, validate_block


def test_defaults_validate_and_are_the_embedded_default():
    cfg = EvaluateParams()
    assert cfg.templates[0] == "a 3D render of a {}." and cfg.prompt_names["plug"] == "wall power outlet"
    assert cfg.logit_scale == 100.0 and cfg.adversarial.budget == 48


@pytest.mark.parametrize("block, needle", [
    ({"templates": ["no slot"]}, "templates"),
    ({"elevation_edges": [0, 0, 10]}, "elevation_edges"),
    ({"wise_alphas": [1.5]}, "wise_alphas"),
    ({"adversarial": {"budget": 4, "n_random": 8}}, "adversarial"),
    ({"adversarial": {"elevation_range": [10, -10]}}, "elevation_range"),
    ({"bootstrap": {"ci": 1.5}}, "bootstrap.ci"),
    ({"typo_key": 1}, "typo_key"),
])
def test_bad_params_name_the_bad_key(block, needle):
    with pytest.raises(ParamsError, match=needle):
        validate_block(EvaluateParams, block, name="evaluate")


def test_adversarial_block_is_frozen():
    with pytest.raises(Exception):
        AdversarialParams().budget = 3

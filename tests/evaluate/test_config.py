import pytest

from ovt.evaluate.config import EvaluateParams, SearchParams
from ovt.params_base import ParamsError, validate_block


def test_defaults_validate_and_are_the_embedded_default():
    cfg = EvaluateParams()
    assert cfg.templates[0] == "a 3D render of a {}."
    assert cfg.logit_scale == 100.0 and cfg.split == "test" and cfg.search.n_random <= cfg.search.budget


@pytest.mark.parametrize(
    "block, needle",
    [
        ({"templates": ["no slot"]}, "templates"),
        ({"elevation_edges": [0, 0, 10]}, "elevation_edges"),
        ({"wise_alphas": [1.5]}, "wise_alphas"),
        ({"search": {"budget": 4, "n_random": 8}}, "search"),
        ({"search": {"elevation_range": [10, -10]}}, "elevation_range"),
        ({"intervals": {"ci": 1.5}}, "intervals.ci"),
        ({"split": "heldout"}, "split"),
        ({"typo_key": 1}, "typo_key"),
    ],
)
def test_bad_params_name_the_bad_key(block, needle):
    with pytest.raises(ParamsError, match=needle):
        validate_block(EvaluateParams, block, name="evaluate")


def test_search_block_is_frozen():
    with pytest.raises(Exception):
        SearchParams().budget = 3

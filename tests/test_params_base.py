from typing import Literal

import pytest

from ovt.params_base import ParamsError, StrictModel, validate_block


class Inner(StrictModel):
    backend: Literal["gl", "blender"] = "gl"
    views: int = 24


class Outer(StrictModel):
    render: Inner = Inner()
    seed: int = 0


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"render": {"backend": "vulkan"}}, ["render.backend", "'gl' or 'blender'", "'vulkan'"]),
        ({"render": {"veiws": 3}}, ["render.veiws: unknown key", "allowed keys: backend, views"]),
        ({"sed": 1}, ["sed: unknown key", "allowed keys: render, seed"]),
        ({"render": {"views": "many"}}, ["render.views", "integer"]),
    ],
)
def test_errors_name_the_key_and_what_is_allowed(data, expected):
    with pytest.raises(ParamsError) as info:
        validate_block(Outer, data, source="params.yaml")
    msg = str(info.value)
    assert msg.startswith("params.yaml:")
    for fragment in expected:
        assert fragment in msg


def test_all_errors_reported_at_once():
    with pytest.raises(ParamsError) as info:
        validate_block(Outer, {"render": {"backend": "x", "views": "y"}, "seed": "z"})
    assert "3 invalid parameter(s)" in str(info.value)


def test_defaults_and_frozen():
    p = validate_block(Outer, None)
    assert p.render.backend == "gl"
    with pytest.raises(Exception):
        p.seed = 3  # frozen: a stage cannot silently mutate its params

import os
from pathlib import Path
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


def _bool_fields():
    """(model, field) for every boolean switch of every params block that ovt.config knows."""
    import ovt.config  # noqa: F401 - imports every stage's params models
    from ovt.params_base import _is_bool_annotation

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    return sorted(
        {
            (m, k)
            for m in subclasses(StrictModel)
            if m.__module__.startswith("ovt.")
            for k, f in m.model_fields.items()
            if _is_bool_annotation(f.annotation)
        },
        key=lambda mk: (mk[0].__module__, mk[0].__name__, mk[1]),
    )


BOOL_FIELDS = _bool_fields()


def test_every_params_block_has_its_switches_checked():
    assert len(BOOL_FIELDS) >= 10  # the walk found the real params models, not just this file's


@pytest.mark.parametrize("model, field", BOOL_FIELDS, ids=[f"{m.__name__}.{k}" for m, k in BOOL_FIELDS])
@pytest.mark.parametrize("value", ["yes", "no", "on", "off", "true", 1, 0])
def test_switches_take_only_yaml_booleans(model, field, value):
    with pytest.raises(ParamsError) as info:
        validate_block(model, {field: value}, name="blk")
    assert f"blk.{field}: must be true or false" in str(info.value)
    assert f"(got {value!r})" in str(info.value)


@pytest.mark.parametrize("model, field", BOOL_FIELDS[:3], ids=[f"{m.__name__}.{k}" for m, k in BOOL_FIELDS[:3]])
def test_real_booleans_still_pass(model, field):
    for v in (True, False):
        try:
            assert getattr(validate_block(model, {field: v}), field) is v
        except ParamsError as err:  # a model with other required keys: at least this key is not the problem
            assert field not in str(err)


def test_params_yaml_yes_string_is_rejected(tmp_path):
    import yaml

    from ovt.config import Params, load_params

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    blocks = {f.annotation: k for k, f in Params.model_fields.items()}
    model, field = next((m, k) for m, k in BOOL_FIELDS if m in blocks)  # a switch directly in a top-level block
    block = blocks[model]
    doc[block][field] = "yes"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match=rf"{block}\.{field}: must be true or false .*got 'yes'"):
        load_params(path)


REPO = Path(__file__).resolve().parents[1]


def _bad_params(tmp_path) -> Path:
    """The real params.yaml with two bad keys: a quoted "yes" switch and a typo."""
    import yaml

    from ovt.config import Params

    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    blocks = {f.annotation: k for k, f in Params.model_fields.items()}
    model, field = next((m, k) for m, k in BOOL_FIELDS if m in blocks)
    doc[blocks[model]][field] = "yes"
    doc["base"]["sed"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "params.yaml"


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "cli.app", "params"],
        ["-m", "cli.app", "repro", "render"],
        ["-m", "cli.app", "promote"],
        ["-m", "stages.features"],
    ],
    ids=["ovt params", "ovt repro", "ovt promote", "stage entry"],
)
def test_bad_params_are_one_line_per_key_and_exit_2(tmp_path, argv):
    import subprocess
    import sys

    _bad_params(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, *argv], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and " INFO " not in ln]
    assert "Traceback" not in proc.stderr
    assert lines[0] == "params.yaml: 2 invalid parameter(s):"
    assert len(lines) == 3
    assert any(ln.strip().startswith("base.sed: unknown key") for ln in lines)
    assert any("must be true or false" in ln and "(got 'yes')" in ln for ln in lines)

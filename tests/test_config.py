"""The whole params.yaml: the committed file validates; a wrong key or value anywhere fails with its dotted name."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.app import app
from ovt.config import Params, ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_validate_and_cover_every_block():
    p = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == set(Params.model_fields)  # params.yaml spells out every block
    assert p.render.backend == "gl" and p.caption.backend == "template" and p.model.arch == "embedded"


def _write(tmp_path, mutate):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda r: r["render"].update(backend="vulkan"), ["render.backend", "'gl' or 'blender'"]),
        (lambda r: r["train"]["loss"].update(lamda=1.0), ["train.loss.lamda: unknown key", "allowed keys:", "lam"]),
        (lambda r: r.update(trian={}), ["trian: unknown key", "allowed keys:", "train"]),
        (lambda r: r["caption"].update(backend="gpt"), ["caption.backend", "'template'"]),
    ],
)
def test_bad_params_name_the_key(tmp_path, mutate, fragments):
    path = _write(tmp_path, mutate)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    for f in fragments:
        assert f in str(info.value)


def test_cli_params_exits_2_with_the_message(tmp_path):
    path = _write(tmp_path, lambda r: r["acquire"]["split"].update(test_fraction="lots"))
    res = CliRunner().invoke(app, ["params", "--path", str(path)])
    assert res.exit_code == 2
    assert "acquire.split.test_fraction" in res.output


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="mapping of blocks"):
        load_params(tmp_path / "list.yaml")

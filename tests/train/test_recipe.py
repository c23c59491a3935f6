"""The README's paper-parity recipe, as written, trains on MVCap-layout metadata (relative ./views/... paths)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from ovt.config import Params, load_params
from ovt.model import OVTModel
from ovt.train.data import build_table
from ovt.train.stage import TrainPaths, run
from tests.train.fixtures import tiny_model_cfg

ROOT = Path(__file__).resolve().parents[2]
MVCAP = ROOT / "tests" / "caption" / "data" / "mvcap_release"
_BLOCK = re.compile(r"<!-- recipe:paper-parity -->\n```yaml\n(?P<body>.*?)```\n<!-- /recipe:paper-parity -->", re.S)


def recipe_overrides() -> dict:
    """The params overrides of README.md's paper-parity block, parsed as they are shown."""
    m = _BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert m, "README.md has no `<!-- recipe:paper-parity -->` yaml block"
    return yaml.safe_load(m["body"])


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def release(tmp_path) -> Path:
    """The MVCap release fixture plus a row whose img_id repeats another object's with a different image."""
    root = tmp_path / "mvcap"
    shutil.copytree(MVCAP, root)
    meta = json.loads((root / "metadata.json").read_text())
    first = meta[0]
    other = next(r for r in meta if r["obj_id"] != first["obj_id"])
    dup_dir = root / "views" / "ffffffffffffffffffffffffffffffff"
    dup_dir.mkdir()
    shutil.copy(root / other["path"], dup_dir / "026.png")
    meta.append(
        {
            "path": "./views/ffffffffffffffffffffffffffffffff/026.png",
            "caption": "a dup",
            "obj_id": 99,
            "img_id": first["img_id"],
        }
    )
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def test_paper_parity_recipe_trains_verbatim_on_mvcap_metadata(release, tmp_path):
    recipe = recipe_overrides()
    assert recipe["train"]["data"]["mvcap_metadata"]  # the recipe names the metadata; here the fixture's
    committed = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params = _merge(committed, recipe)
    params["train"]["data"]["mvcap_metadata"] = str(release / "metadata.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    p: Params = load_params(tmp_path / "params.yaml")  # the whole recipe validates as params.yaml would
    assert p.model.arch == recipe["model"]["arch"]

    # what the recipe does not set, made tiny: the model (random init) and the run's length
    train = p.train.model_copy(
        update={
            "max_steps": 2,
            "checkpoint_every": 1,
            "data": p.train.data.model_copy(update={"mvcap_batch": 2}),
            "mining": p.train.mining.model_copy(update={"batch_size": 4, "knn": 2, "hard_k": 1}),
            "tracking": p.train.tracking.model_copy(update={"progress": False}),
        }
    )
    table = build_table(train.data, None, None)
    assert len(table.twod) == 0 and "twod" not in table.sources  # auto: no 2D pairs from MVCap metadata
    # rows are keyed by path: the two rows sharing an img_id are both used, with their own images
    meta = json.loads((release / "metadata.json").read_text())
    assert len(table.mv) == len(meta) == len({p.key for p in table.mv})
    shared = [p for p in table.mv if p.text == "a dup" or p.key == f"mvcap:{meta[0]['path']}"]
    assert len(shared) == 2 and len({p.image.path for p in shared}) == 2

    out = tmp_path / "models"
    paths = TrainPaths(
        renders_dir=tmp_path / "none", captions_dir=tmp_path / "none", base_dir=None, features_dir=None, out_dir=out
    )
    run(train, seed=p.base.seed, paths=paths, model_cfg=tiny_model_cfg())
    metrics = json.loads((out / "train_metrics" / "metrics.json").read_text())
    for variant in p.train.variants:
        assert not variant.endswith("_hv")
        assert metrics[variant]["steps"] == 2
        assert (out / variant / "train.json").is_file()
        model = OVTModel.load(out / variant)
        assert model is not None


def test_canonical_2d_source_with_mvcap_metadata_is_refused(release):
    from pydantic import ValidationError

    from ovt.train.config import DataParams

    with pytest.raises(ValidationError, match="needs render shards"):
        DataParams(mvcap_metadata=release / "metadata.json", twod_source="canonical")
    assert DataParams(mvcap_metadata=release / "metadata.json").twod_resolved == "none"
    assert DataParams().twod_resolved == "canonical"
    assert DataParams(mvcap_metadata=release / "metadata.json", twod_source="canonical", twod_batch=0)

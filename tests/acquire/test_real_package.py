"""A small run on the real Debian sweethome3d-furniture package (skipped where it is not installed)."""

from pathlib import Path

import pytest

from ovt.acquire.config import DEFAULT_SH3F_PATHS, AcquireParams
from ovt.acquire.stage import AcquirePaths, run
from ovt.io import read_jsonl

HAVE_PACKAGE = any(Path(p).glob("*.sh3f") for p in DEFAULT_SH3F_PATHS if Path(p).is_dir())


@pytest.mark.skipif(not HAVE_PACKAGE, reason="sweethome3d-furniture is not installed")
def test_five_real_assets(tmp_path):
    stats = run(AcquireParams(filters={"max_assets": 5}), seed=0, paths=AcquirePaths(tmp_path), progress=False)
    rows = read_jsonl(tmp_path / "manifest.jsonl")
    assert stats["n_assets"] == len(rows) == 5 and stats["n_candidates"] == {"sweethome3d": 820}
    for r in rows:
        assert r["mesh"].endswith(".obj") and (tmp_path / r["mesh"]).is_file()
        assert r["licence"] and r["n_faces"] > 0 and r["dims_cm"]["height"] > 0

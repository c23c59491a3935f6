"""The Prefect fan-out writes the same outputs as the stage's own worker lanes, with ThreadPool and Dask."""

import os
import sys
from pathlib import Path

import pytest

from ovt.render import stage
from ovt.render.config import RenderParams

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(image_size=32, rings=[{"elevation": 10, "n_azimuth": 3}], poles=False, objects_per_shard=1, workers=2,
             msaa=0, object_timeout_s=120)


@pytest.fixture(scope="module")
def harness(prefect_harness):  # the suite-wide Prefect test API (tests/conftest.py)
    # Dask's spawned workers must import `flows.render_fanout` and `ovt` by name
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), old]))
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    yield
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def _outputs(out: Path) -> dict:
    files = {p.name: p.read_bytes() for p in sorted((out / "shards").glob("shard-*.tar"))}
    files["manifest.jsonl"] = (out / "manifest.jsonl").read_bytes()
    return files


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("runner", ["thread", "dask"])
def test_fanout_matches_local_run(assets, tmp_path, harness, runner):
    from flows.render_fanout import run_fanout

    local = tmp_path / "local"
    stage.run(RenderParams(**SMALL), seed=0, assets_dir=assets, out_dir=local, progress=False)
    fanned = tmp_path / runner
    stats = run_fanout(RenderParams(**SMALL, task_runner=runner), seed=0, assets_dir=assets, out_dir=fanned)
    assert stats["shards_rendered"] == 3 and stats["objects_ok"] == 3
    assert _outputs(fanned) == _outputs(local)
    again = run_fanout(RenderParams(**SMALL, task_runner=runner), seed=0, assets_dir=assets, out_dir=fanned)
    assert again["shards_rendered"] == 0

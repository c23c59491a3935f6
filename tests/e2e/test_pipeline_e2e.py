"""The whole pipeline, end to end, on a tiny configuration, against the real local services.

A copy of the project (dvc.yaml, stages/, ovt/ for dependency hashing, a tiny params.yaml) in a temp git repo; a real
SeaweedFS + MLflow + Prefect stack on free ports; the Prefect pipeline flow in a subprocess (so it talks to that
server, not to a test harness), then the registry gate. Checks what a user would: every stage ran, a second run does
nothing, the artifacts are in S3 and come back with `dvc pull`, the run is in Prefect's API, and a registered model
version holds `champion` with its lineage tags and metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "acquire": {"filters": {"include_names": ["(?i)(^| )(chair|table|lamp)$"], "max_assets": 18},
                "labels": {"min_per_class": 3}, "split": {"validation_fraction": 0.15, "test_fraction": 0.3}},
    "render": {"rings": [{"elevation": 10.0, "n_azimuth": 4, "azimuth_offset": 0.0},
                         {"elevation": 60.0, "n_azimuth": 4, "azimuth_offset": 45.0}],
               "image_size": 96, "objects_per_shard": 6, "workers": 1},
    "bootstrap": {"steps": 15, "batch_size": 32, "warmup_steps": 2},
    "train": {"epochs": 1, "max_steps": 3, "checkpoint_every": 2,
              "data": {"mvcap_batch": 16, "twod_batch": 4},
              "mining": {"batch_size": 32}, "tracking": {"progress": False},
              "heldout_viewpoints": {"train_bands": [[-90.0, 45.0]]}},
    "evaluate": {"bootstrap": {"n_resamples": 50},
                 "adversarial": {"budget": 4, "n_random": 2, "population": 2, "max_objects": 2,
                                 "models": ["base", "ovt"]}},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    repo = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "ovt", "flows"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    return repo


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from ovt.services.testing import local_stack

    with local_stack(tmp_path_factory.mktemp("state")) as mgr:
        yield mgr


@pytest.fixture(scope="module")
def env(project, stack):
    env = {**os.environ, **stack.client_env(), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_LOGGING_LEVEL", None)
    s3 = env["AWS_ENDPOINT_URL"]
    for key, value in (("endpointurl", s3), ("access_key_id", env["AWS_ACCESS_KEY_ID"]),
                       ("secret_access_key", env["AWS_SECRET_ACCESS_KEY"])):
        subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", key, value],
                       cwd=project, env=env, check=True, capture_output=True)
    return env


def _run_py(code: str, cwd: Path, env: dict, timeout: int = 1200) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-8000:]}"
    return proc.stdout


FLOW = ("import json; from flows.pipeline import pipeline; "
        "print('SUMMARY ' + json.dumps(pipeline(repo='.', env=None)))")


def _summary(out: str) -> dict:
    line = [x for x in out.splitlines() if x.startswith("SUMMARY ")][-1]
    return json.loads(line[len("SUMMARY "):])


def test_whole_pipeline_end_to_end(project, env, stack):
    # 1. the Prefect flow on the real server: every stage, then dvc push to the local S3
    first = _summary(_run_py(FLOW, project, env))
    stages = [s["stage"] for s in first["stages"]]
    assert stages == ["acquire", "render", "caption", "features", "bootstrap", "train", "evaluate", "register"]
    assert all(s["ran"] for s in first["stages"]), first
    assert "pushed" in first["push"]["output"]

    metrics = json.loads((project / "data/eval/metrics.json").read_text())
    for model in ("base", "contrastive", "ovt", "ovt_hv"):
        assert 0.0 <= metrics[model]["mean_acc"] <= 1.0
    registered = json.loads((project / "data/register/registered.json").read_text())
    assert registered["version"]

    # 2. the gate: the first version becomes champion; a second call changes nothing
    promote = ("import json; from ovt.config import load_params; from ovt.registry.promote import promote; "
               "print('DECISION ' + json.dumps(promote(load_params('params.yaml').registry).to_json()))")
    d1 = json.loads(_run_py(promote, project, env).split("DECISION ", 1)[1])
    d2 = json.loads(_run_py(promote, project, env).split("DECISION ", 1)[1])
    assert d1["action"] == "first-champion" and d1["champion_after"] == str(registered["version"])
    assert d2["action"] == "already-champion" and d2["changed"] == []

    from mlflow import MlflowClient

    # A client of its own, not mlflow.set_tracking_uri(): that global would outlive this module's stack.
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    name = yaml.safe_load((project / "params.yaml").read_text())["registry"]["model_name"]
    champ = client.get_model_version_by_alias(name, "champion")
    assert champ.version == str(registered["version"])
    for tag in ("ovt.git_commit", "ovt.params_digest", "ovt.dvc.assets_manifest", "ovt.dvc.render_shards",
                "ovt.dvc.captions", "ovt.dvc.train_outputs", "ovt.metric.worst_view", "ovt.metric.off_canonical",
                "ovt.metric.canonical"):
        assert tag in champ.tags, (tag, sorted(champ.tags))

    # 3. nothing changed: a second run reproduces nothing and registers nothing new
    again = _summary(_run_py(FLOW, project, env))
    assert not any(s["ran"] for s in again["stages"]), again
    assert len(client.search_model_versions(f"name='{name}'")) == 1

    # 4. the run is in Prefect's API
    import httpx

    runs = httpx.post(f"{env['PREFECT_API_URL']}/flow_runs/filter", json={"limit": 20}).json()
    assert sum(r["state_type"] == "COMPLETED" for r in runs) >= 2

    # 5. data round trip through S3: drop the cache and the outputs, pull them back
    manifest = project / "data/assets/manifest.jsonl"
    before = _md5(manifest)
    shutil.rmtree(project / ".dvc/cache")
    manifest.unlink()
    subprocess.run([sys.executable, "-m", "dvc", "pull", "-q"], cwd=project, env=env, check=True)
    assert _md5(manifest) == before
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "-c"], cwd=project, env=env, check=True,
                            capture_output=True, text=True).stdout
    assert "new" not in status and "missing" not in status, status

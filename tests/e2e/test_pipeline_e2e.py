"""The whole pipeline, end to end, on a tiny configuration, against the real local services.

A copy of the project (dvc.yaml, stages/, ovt/ for dependency hashing, a tiny params.yaml) committed in a temp git
repo; a real SeaweedFS + MLflow + Prefect stack on free ports; DVC's remote pointed at that S3 by `ovt remote`; the
Prefect pipeline flow in a subprocess (so it talks to that server, not to a test harness). Checks what a user would:
every stage ran and wrote the metrics the README renders; the flow registered one version and made it champion; a
second run reproduces nothing and registers nothing; the record is comparable (`dvc metrics diff`, `dvc plots diff`,
`dvc exp run -S` -> `dvc exp show`, and the experiment touches no registry); the artifacts are in S3 and come back
with `dvc pull`; the runs are in Prefect's API.
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

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "acquire": {
        "filters": {"include_names": ["(?i)(^| )(chair|table|lamp)$"], "max_assets": 18},
        "labels": {"min_per_class": 3},
        "split": {"validation_fraction": 0.15, "test_fraction": 0.3},
    },
    "render": {
        "rings": [
            {"elevation": 10.0, "n_azimuth": 4, "azimuth_offset": 0.0},
            {"elevation": 60.0, "n_azimuth": 4, "azimuth_offset": 45.0},
        ],
        "image_size": 96,
        "objects_per_shard": 6,
        "workers": 1,
    },
    "bootstrap": {"steps": 15, "batch_size": 32, "warmup_steps": 2},
    "train": {
        "epochs": 1,
        "max_steps": 3,
        "checkpoint_every": 2,
        "data": {"mvcap_batch": 16, "twod_batch": 4},
        "mining": {"batch_size": 32},
        "tracking": {"progress": False},
        "heldout_viewpoints": {"train_bands": [[-90.0, 45.0]]},
    },
    "evaluate": {
        "intervals": {"n_resamples": 50},
        "search": {"budget": 4, "n_random": 2, "population": 2, "max_objects": 2, "models": ["base", "ovt"]},
    },
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
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "project")  # a fresh clone: code, params, dvc.yaml; no outputs, no lock
    return repo


GIT_ID = {
    "GIT_AUTHOR_NAME": "e2e",
    "GIT_AUTHOR_EMAIL": "e2e@localhost",
    "GIT_COMMITTER_NAME": "e2e",
    "GIT_COMMITTER_EMAIL": "e2e@localhost",
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, env={**os.environ, **GIT_ID}
    ).stdout


def _dvc(repo: Path, env: dict, *args: str) -> str:
    from ovt.dvc_driver import dvc_env

    # dvc_env: this interpreter's bin first on PATH, so `python -m stages.x` runs in this venv
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=dvc_env(env), capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, (
        f"dvc {' '.join(args)}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from ovt.services.testing import local_stack

    with local_stack(tmp_path_factory.mktemp("state")) as mgr:
        yield mgr


@pytest.fixture(scope="module")
def env(project, stack):
    env = {**os.environ, **stack.client_env(), **GIT_ID, "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_LOGGING_LEVEL", None)
    # DVC's remote follows the stack's (free, moved) S3 port through `ovt remote`, as `ovt run` does
    out = subprocess.run(
        [sys.executable, "-m", "cli.app", "remote", "--repo", str(project)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert _dvc(project, env, "config", "remote.local.endpointurl").strip() == env["AWS_ENDPOINT_URL"]
    return env


def _run_py(code: str, cwd: Path, env: dict, timeout: int = 1200) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-8000:]}"
    )
    return proc.stdout


FLOW = "import json; from flows.pipeline import pipeline; print('SUMMARY ' + json.dumps(pipeline(repo='.', env=None)))"


def _summary(out: str) -> dict:
    line = [x for x in out.splitlines() if x.startswith("SUMMARY ")][-1]
    return json.loads(line[len("SUMMARY ") :])


def _values(doc, key: str) -> list:
    """Every value stored under `key` anywhere in a JSON document."""
    if isinstance(doc, dict):
        return [v for k, v in doc.items() if k == key] + [x for v in doc.values() for x in _values(v, key)]
    if isinstance(doc, list):
        return [x for v in doc for x in _values(v, key)]
    return []


def test_whole_pipeline_end_to_end(project, env, stack):
    from ovt.report import RESULT_COLUMNS, render_results

    # 1. the Prefect flow on the real server: every stage, dvc push to the local S3, register, promote
    first = _summary(_run_py(FLOW, project, env))
    stages = [s["stage"] for s in first["stages"]]
    assert stages == ["acquire", "render", "caption", "features", "bootstrap", "train", "evaluate"]
    assert all(s["ran"] and s["seconds"] > 0 and s["cpu_seconds"] > 0 for s in first["stages"]), first
    assert "pushed" in first["push"]["output"]
    assert set(first["timings"]) == {"dvc_status", "push", "register", "promote"}

    metrics = json.loads((project / "data/eval/metrics.json").read_text())
    assert metrics["n_objects"] > 0 and metrics["n_views"] >= metrics["n_objects"]
    for model in ("base", "contrastive", "ovt", "contrastive_hv", "ovt_hv"):
        for _, key in RESULT_COLUMNS:  # every metric the README table renders, with its interval
            for k in (key, f"{key}_lo", f"{key}_hi"):
                assert k in metrics[model], (model, k, sorted(metrics[model]))
        assert 0.0 <= metrics[model]["mean_acc"] <= 1.0
        assert metrics[model]["mean_acc_lo"] <= metrics[model]["mean_acc"] <= metrics[model]["mean_acc_hi"]
    assert "worst_view_acc" in metrics["ovt-contrastive"]
    # the power protocol of the committed params: seed replicates, pooled per object into the `_x<n>` comparison
    n_seeds = yaml.safe_load((project / "params.yaml").read_text())["train"]["seeds"]
    assert (project / "models" / "ovt" / "seeds" / str(n_seeds - 1) / "model.json").is_file()
    pooled = metrics[f"ovt_x{n_seeds}-contrastive_x{n_seeds}"]
    assert pooled["worst_view_acc_lo"] <= pooled["worst_view_acc"] <= pooled["worst_view_acc_hi"]
    assert "| OVT |" in render_results(project)  # `ovt report` renders this run's metrics

    reg = first["register"]
    assert reg["version"] == "1" and reg["created"] is True and "challenger" in reg["aliases"], reg
    assert first["promote"]["action"] == "first-champion" and first["promote"]["champion_after"] == reg["version"]
    assert not (project / "data/register").exists()  # registration is no DVC stage and writes no DVC output

    from mlflow import MlflowClient

    # A client of its own, not mlflow.set_tracking_uri(): that global would outlive this module's stack.
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    name = yaml.safe_load((project / "params.yaml").read_text())["registry"]["model_name"]
    champ = client.get_model_version_by_alias(name, "champion")
    assert champ.version == reg["version"]
    for tag in (
        "ovt.git_commit",
        "ovt.params_digest",
        "ovt.dvc.assets_manifest",
        "ovt.dvc.render_shards",
        "ovt.dvc.captions",
        "ovt.dvc.train_outputs",
        "ovt.metric.worst_view",
        "ovt.metric.off_canonical",
        "ovt.metric.canonical",
    ):
        assert tag in champ.tags, (tag, sorted(champ.tags))

    # 2. the record: dvc.lock and the small metric/plot files are what git tracks; commit them
    _git(project, "add", "-A")
    committed = set(_git(project, "diff", "--cached", "--name-only").split())
    assert {"dvc.lock", "data/eval/metrics.json", "data/assets/stats.json", "metrics/bootstrap.json"} <= committed
    assert not any(p.startswith(("data/assets/store", "data/renders/shards", "models/ovt/")) for p in committed)
    _git(project, "commit", "-qm", "pipeline run")
    assert _git(project, "status", "--porcelain").strip() == ""

    # 3. nothing changed: a second run reproduces nothing and registers nothing new
    again = _summary(_run_py(FLOW, project, env))
    assert not any(s["ran"] for s in again["stages"]), again
    assert again["register"]["version"] == reg["version"] and again["register"]["created"] is False
    assert again["promote"]["action"] == "already-champion" and again["promote"]["changed"] == []
    assert len(client.search_model_versions(f"name='{name}'")) == 1
    assert _git(project, "status", "--porcelain").strip() == ""  # the rerun left the record as committed

    # 4. the runs are in Prefect's API
    import httpx

    runs = httpx.post(f"{env['PREFECT_API_URL']}/flow_runs/filter", json={"limit": 20}).json()
    assert sum(r["state_type"] == "COMPLETED" for r in runs) >= 2

    # 5. data round trip through S3: drop the cache and the outputs, pull them back
    manifest = project / "data/assets/manifest.jsonl"
    before = _md5(manifest)
    shutil.rmtree(project / ".dvc/cache")
    manifest.unlink()
    _dvc(project, env, "pull", "-q")
    assert _md5(manifest) == before
    status = _dvc(project, env, "status", "-c")
    assert "new" not in status and "missing" not in status, status

    # 6. an experiment: `dvc exp run -S` reruns only what the param feeds, is listed by `dvc exp show`, and is
    # compared with the commit by `dvc metrics diff` / `dvc plots diff` — without touching the model registry
    assert json.loads(_dvc(project, env, "metrics", "diff", "HEAD", "--json") or "{}") == {}
    lock_before = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    _dvc(project, env, "exp", "run", "-S", "evaluate.intervals.n_resamples=60")
    lock_after = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert {s for s in lock_before if lock_before[s] != lock_after[s]} == {"evaluate"}
    shown = json.loads(_dvc(project, env, "exp", "show", "--json"))
    assert 60 in _values(shown, "n_resamples") and 50 in _values(shown, "n_resamples"), "exp show: both runs"
    assert _values(shown, "worst_view_acc"), "exp show lists the evaluate metrics"
    diff = json.loads(_dvc(project, env, "metrics", "diff", "HEAD", "--json"))
    assert set(diff) == {"data/eval/metrics.json"}, diff  # the bootstrap intervals moved, nothing else
    _dvc(project, env, "plots", "diff", "HEAD", "--json")
    assert len(client.search_model_versions(f"name='{name}'")) == 1

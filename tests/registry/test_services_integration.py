"""Against the real local stack (SeaweedFS + MLflow server [+ Prefect server]) on free ports.

- register/promote/load through the MLflow server with S3 artifacts;
- S3 outage (SeaweedFS stopped): a clear error, no version left half-registered; back up -> registration completes;
- the scheduled deployment fires on a short interval and `stop_schedule` stops it.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ovt.registry.promote import promote
from ovt.registry.register import STATE_TAG, register
from ovt.registry.retry import RegistryError

from .conftest import write_metrics

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from ovt.services.testing import local_stack

    with local_stack(tmp_path_factory.mktemp("stack"), names=("s3", "mlflow")) as mgr:
        yield mgr


@pytest.fixture
def server(stack, monkeypatch):
    import mlflow

    from ovt.registry.config import RetryParams
    from ovt.registry.retry import mlflow_http_env

    env = stack.client_env()
    # What the CLI / flow set for a process that registers: MLflow's own per-request retries off.
    env.update(mlflow_http_env(RetryParams(request_timeout_s=20), environ={}))
    for k, v in env.items():
        if k != "PREFECT_API_URL":  # this test process keeps the harness/ephemeral Prefect
            monkeypatch.setenv(k, v)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    yield env
    mlflow.set_tracking_uri(None)


def test_s3_outage_is_a_clear_error_and_leaves_nothing_half_registered(stack, server, workspace, cfg):
    from mlflow import MlflowClient

    def reg():
        return register(cfg, root=workspace, models_dir=workspace / "models", eval_dir=workspace / "data" / "eval")

    first = reg()
    assert first.version == "1" and promote(cfg).champion_after == "1"
    write_metrics(workspace / "data" / "eval", worst_view_acc=0.5)  # a new model to register
    stack.down(["s3"])
    try:
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match="S3 artifact store") as err:
            reg()
        dt = time.monotonic() - t0
        print(f"S3 outage reported after {dt:.1f} s")
        assert dt < 240, "an outage must be reported promptly, not after minutes of retries"
        assert "rerun resumes" in str(err.value)
        versions = MlflowClient().search_model_versions(f"name = '{cfg.model_name}'")
        assert [str(v.version) for v in versions] == ["1"]  # nothing new, nothing half-done
        assert str(MlflowClient().get_model_version_by_alias(cfg.model_name, "challenger").version) == "1"
    finally:
        stack.up(["s3"])
    again = reg()  # storage back: the registration completes
    assert again.created and again.version == "2"
    mv = MlflowClient().get_model_version(cfg.model_name, "2")
    assert mv.tags[STATE_TAG] == "complete" and "challenger" in mv.aliases
    # stored in S3 behind the server: a fresh process loads the champion through the server
    code = (
        "import mlflow,sys; m=mlflow.pyfunc.load_model(sys.argv[1]); "
        "print('OK', len(m.predict({'text': ['a chair']})['text_embedding'][0]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, f"models:/{cfg.model_name}@champion"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **server, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0 and "OK 32" in proc.stdout, proc.stderr[-2000:]


def _flow_runs(api: str, deployment_id: str, state: str) -> list[dict]:
    body = json.dumps(
        {"flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": [state]}}}}
    ).encode()
    req = urllib.request.Request(f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def _deployment_id(api: str, flow: str, name: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{api}/deployments/name/{flow}/{name}", timeout=10) as r:
            return json.load(r)["id"]
    except urllib.error.HTTPError:
        return None


@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory):
    from ovt.services.testing import local_stack

    with local_stack(tmp_path_factory.mktemp("pstack"), names=("prefect",)) as mgr:
        yield mgr


def test_prefect_deploy_accepts_local_and_cluster_files(prefect_stack):
    """`prefect deploy` (the tool's own validation: entrypoints, parameters, job variables vs pool templates)."""
    env = {
        **os.environ,
        **prefect_stack.client_env(),
        "MLFLOW_TRACKING_URI": "https://mlflow.example.org",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }

    def prefect(*args):
        p = subprocess.run(
            [sys.executable, "-m", "prefect", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]

    prefect("work-pool", "create", "ovt-local", "--type", "process")
    prefect("work-pool", "create", "ovt-k8s-cpu", "--type", "kubernetes")
    prefect(
        "work-pool",
        "create",
        "ovt-k8s-gpu",
        "--type",
        "kubernetes",
        "--base-job-template",
        "infra/production/k8s-gpu-base-job-template.json",
    )
    prefect("--no-prompt", "deploy", "--all")
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", "infra/production/prefect-cluster.yaml")
    req = urllib.request.Request(
        f"{prefect_stack.settings.prefect_api_url}/deployments/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        deps = {d["name"]: d for d in json.load(r)}
    assert set(deps) >= {"nightly", "promote", "production-nightly", "train-gpu"}
    for d in deps.values():
        assert d["global_concurrency_limit"]["limit"] == 1, d["name"]
        assert "git_clone" not in json.dumps(d.get("pull_steps"))
    assert deps["nightly"]["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert deps["nightly"]["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
    assert deps["train-gpu"]["job_variables"]["nnodes"] == 2


def test_scheduled_deployment_fires_and_stops(prefect_stack, tmp_path_factory):
    import psutil

    from cli.schedule import schedule_status, start_schedule, stop_schedule
    from flows.deploy import FLOW_NAME

    params = tmp_path_factory.mktemp("p") / "params.yaml"
    params.write_text("registry:\n  schedule: {deployment_name: every-few-seconds}\n")
    s = prefect_stack.settings
    info = start_schedule(
        str(params), interval_s=5, parameters={"dry_run": True, "required_services": ["prefect"]}, settings=s
    )
    try:
        assert info["started"] and schedule_status(s)["running"]
        assert start_schedule(str(params), settings=s)["started"] is False  # one runner only
        deadline, done, dep = time.monotonic() + 240, [], None
        while time.monotonic() < deadline and not done:
            time.sleep(3)
            dep = dep or _deployment_id(s.prefect_api_url, FLOW_NAME, "every-few-seconds")
            done = dep and _flow_runs(s.prefect_api_url, dep, "COMPLETED")
        log = Path(info["log"]).read_text()[-3000:]
        assert done, f"no completed scheduled run; runner log:\n{log}"
        assert not _flow_runs(s.prefect_api_url, dep, "FAILED"), log
    finally:
        pid = schedule_status(s)["pid"]
        assert stop_schedule(s)
    assert not schedule_status(s)["running"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert stop_schedule(s) is False  # idempotent

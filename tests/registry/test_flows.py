"""The promote flow and the scheduled pipeline flow on `prefect_test_harness` (a real temporary Prefect API)."""

import pytest

from .test_promote import CHAMP, _add_version


@pytest.fixture
def params_file(tmp_path, cfg):
    p = tmp_path / "params.yaml"
    p.write_text(
        f"registry:\n  model_name: {cfg.model_name}\n  experiment: {cfg.experiment}\n"
        f"  retry: {{attempts: 2, initial_delay_s: 0.05}}\n"
    )
    return p


def test_promote_flow_first_champion_then_reject(prefect_harness, mlflow_store, cfg, params_file):
    from mlflow import MlflowClient

    from flows.promote import promote_flow

    c = MlflowClient()
    v1 = _add_version(c, cfg, CHAMP)
    assert promote_flow(str(params_file))["action"] == "first-champion"
    _add_version(c, cfg, {"worst_view": 0.1, "off_canonical": 0.6, "canonical": 0.7})
    d = promote_flow(str(params_file))
    assert d["action"] == "rejected" and d["champion_after"] == v1
    assert promote_flow(str(params_file))["changed"] == []


def test_scheduled_pipeline_fails_clearly_when_a_service_is_down(prefect_harness, monkeypatch, tmp_path):
    from flows.deploy import scheduled_pipeline

    # an empty state folder: no service of this project is running there
    monkeypatch.setenv("OVT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(RuntimeError, match=r"not healthy: s3, mlflow.*ovt up"):
        scheduled_pipeline(dry_run=True)


def test_tracking_env_is_returned_not_applied(monkeypatch):
    # the flows hand the services' settings to their registry calls and DVC subprocesses; this process keeps its own
    import os

    from flows.promote import tracking_env

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = dict(os.environ)
    env = tracking_env()
    assert env.get("MLFLOW_TRACKING_URI") and not any(k.startswith("PREFECT_") for k in env)
    assert dict(os.environ) == before
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://chosen.example:5000")
    assert tracking_env() == {}

"""Registration against a real (sqlite + file artifacts) MLflow store with the real pyfunc and a tiny OVT model."""

import pytest

from ovt.registry.register import COMPLETE, STATE_TAG, register

from .conftest import write_metrics


def _reg(cfg, root):
    return register(cfg, root=root, models_dir=root / "models", eval_dir=root / "data" / "eval")


def _versions(cfg):
    from mlflow import MlflowClient

    return MlflowClient().search_model_versions(f"name = '{cfg.model_name}'")


def test_register_is_idempotent_and_new_lineage_makes_a_new_challenger(mlflow_store, workspace, cfg):
    from mlflow import MlflowClient

    r1 = _reg(cfg, workspace)
    assert r1.created and r1.version == "1" and r1.aliases == ["challenger"]
    mv = MlflowClient().get_model_version(cfg.model_name, "1")
    assert mv.tags[STATE_TAG] == COMPLETE and mv.tags["ovt.lineage_digest"] == r1.lineage_digest
    assert mv.tags["ovt.dvc.train_outputs"] == "d" * 32 + ".dir" and float(mv.tags["ovt.metric.worst_view"]) == 0.2
    run = MlflowClient().get_run(mv.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["heldout.worst_view"] == pytest.approx(0.2)
    assert run.data.tags["ovt.lineage_digest"] == r1.lineage_digest

    r2 = _reg(cfg, workspace)  # nothing changed: nothing new
    assert not r2.created and r2.version == "1" and len(_versions(cfg)) == 1

    write_metrics(workspace / "data" / "eval", worst_view_acc=0.4)  # a retrained model scores differently
    r3 = _reg(cfg, workspace)
    assert r3.created and r3.version == "2" and r3.aliases == ["challenger"]
    assert MlflowClient().get_model_version_by_alias(cfg.model_name, "challenger").version in ("2", 2)


def test_half_done_registration_is_resumed_not_duplicated(mlflow_store, workspace, cfg):
    from mlflow import MlflowClient

    c = MlflowClient()
    r1 = _reg(cfg, workspace)
    # simulate a crash between "create version (with tags)" and "set alias / mark complete"
    c.delete_registered_model_alias(cfg.model_name, "challenger")
    c.set_model_version_tag(cfg.model_name, r1.version, STATE_TAG, "registering")
    r2 = _reg(cfg, workspace)
    assert r2.created and r2.version == r1.version and len(_versions(cfg)) == 1
    mv = c.get_model_version(cfg.model_name, r1.version)
    assert mv.tags[STATE_TAG] == COMPLETE and "challenger" in mv.aliases


def test_tracking_uri_argument_leaves_the_process_as_it_was(mlflow_store, workspace, cfg, monkeypatch):
    # a scheduled flow started without the services' settings passes the server as an argument: the registration
    # lands there, and neither MLflow's URI nor the process environment keeps it afterwards
    import os

    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service import utils

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reg = register(
        cfg,
        root=workspace,
        models_dir=workspace / "models",
        eval_dir=workspace / "data" / "eval",
        tracking_uri=mlflow_store,
    )
    assert reg.created and reg.tracking_uri == mlflow_store
    assert "MLFLOW_TRACKING_URI" not in os.environ and utils._tracking_uri is None
    assert (
        MlflowClient(tracking_uri=mlflow_store).get_model_version(cfg.model_name, reg.version).tags[STATE_TAG]
        == COMPLETE
    )

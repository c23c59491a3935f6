import csv

import pytest

from ovt.train.tracking import Tracker


@pytest.mark.slow
def test_json_csv_and_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    t = Tracker(True, False, "exp", "run", {"loss": {"lam": 1.0}, "variant": "ovt"})
    t.step({"step": 1, "epoch": 0, "lr": 1e-4, "loss": 2.5, "loss_itc": 2.2, "loss_vc": 0.3, "hard_in_batch": 2,
            "samples_per_s": 10.0})
    t.event({"epoch": 0, "mining_s": 1.5, "mined/hard_views": 10, "mode": "full_pass"}, step=0)
    t.write(tmp_path / "steps.csv", tmp_path / "summary.json", {"final_loss": 2.5})
    t.close()
    rows = list(csv.DictReader(open(tmp_path / "steps.csv")))
    assert rows[0]["loss_vc"] == "0.3" and (tmp_path / "summary.json").exists()
    import mlflow

    run = mlflow.search_runs(experiment_names=["exp"], output_format="list")[0]
    assert run.data.params["loss.lam"] == "1.0"
    assert run.data.metrics["loss"] == 2.5 and run.data.metrics["mined/hard_views"] == 10


def test_disabled_on_other_ranks(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = Tracker(False, True, "exp", "run", {})
    t.step({"step": 1})
    t.write(tmp_path / "s.csv", tmp_path / "s.json", {})
    assert not (tmp_path / "s.csv").exists() and t.rows == []

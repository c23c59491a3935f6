import json

import pytest

from ovt.train.tracking import Tracker, write_live


@pytest.mark.slow
def test_dvclive_folder_and_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    t = Tracker(True, False, "exp", "run", {"loss": {"lam": 1.0}, "variant": "ovt"})
    t.event({"epoch": 0, "mining_s": 1.5, "mined/hard_views": 10, "mode": "full_pass"}, step=0)
    for s in (1, 2):
        t.step(
            {
                "step": s,
                "epoch": 0,
                "lr": 1e-4,
                "loss": 2.5 / s,
                "loss_itc": 2.2,
                "loss_vc": 0.3,
                "hard_in_batch": 2,
                "samples_per_s": 10.0,
            }
        )
    t.summary({"final_loss": 1.25, "skipped": False})
    t.close()
    live = tmp_path / "live"
    (live / "plots" / "metrics").mkdir(parents=True)
    (live / "plots" / "metrics" / "stale.tsv").write_text("step\tstale\n9\t1\n")  # a previous run's leftovers
    write_live(live, t.history(), {"final_loss": 1.25})
    tsv = (live / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert tsv == ["step\tloss", "1\t2.5", "2\t1.25"]
    assert (live / "plots" / "metrics" / "mined_hard_views.tsv").read_text().splitlines()[1] == "1\t10.0"
    assert not (live / "plots" / "metrics" / "stale.tsv").exists()
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["final_loss"] == 1.25 and summary["loss"] == 1.25 and summary["step"] == 2
    assert json.loads((live / "history.json").read_text()) == t.history()
    import mlflow

    run = mlflow.search_runs(experiment_names=["exp"], output_format="list")[0]
    assert run.data.params["loss.lam"] == "1.0"
    assert run.data.metrics["loss"] == 1.25 and run.data.metrics["mined/hard_views"] == 10


def test_disabled_on_other_ranks(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = Tracker(False, True, "exp", "run", {})
    t.step({"step": 1})
    t.event({"mining_s": 1.0}, 0)
    assert t.rows == [] and t.events == []

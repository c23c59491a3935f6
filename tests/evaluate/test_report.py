import json
import math

import numpy as np
import pytest

from ovt.evaluate.intervals import paired_bootstrap
from ovt.evaluate.metrics import COL, COLUMNS
from ovt.evaluate.report import flatten, log_to_mlflow, metrics_doc, summary_table


def _boot():
    s = np.zeros((4, len(COLUMNS)))
    s[:, COL["n"]] = 2
    s[:, COL["top1"]] = [2, 1, 0, 2]
    s[:, COL["one"]] = 1
    s[:, COL["all_top1"]] = [1, 0, 0, 1]
    t = s.copy()
    t[:, COL["top1"]] = 2
    t[:, COL["all_top1"]] = 1
    return paired_bootstrap({"base": s, "ovt": t}, n_resamples=50, seed=0)


def test_metrics_doc_is_a_tree_with_dotted_paths_and_json_safe():
    doc = metrics_doc(_boot(), {"n_objects": 4, "ovt.bench.toy.top1": 0.5})
    assert doc["ovt"]["worst_view_acc"] == 1.0 and doc["ovt"]["bench"]["toy"]["top1"] == 0.5
    m = flatten(doc)
    assert m["base.mean_acc"] == pytest.approx(5 / 8) and m["ovt.worst_view_acc"] == 1.0
    assert m["ovt-base.worst_view_acc"] == pytest.approx(0.5)
    assert {"ovt-base.worst_view_acc_lo", "ovt-base.worst_view_acc_hi"} <= set(m)
    assert m["base.canonical_acc"] is None  # no canonical views: undefined, not NaN (invalid JSON)
    json.dumps(m, allow_nan=False)
    assert m["n_objects"] == 4


def test_summary_table_lists_models_and_differences():
    text = summary_table(_boot(), "plain")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["model", "mean_acc", "worst_view_acc"]
    assert lines[1].startswith("base") and any(line.startswith("Δ ovt-base") for line in lines)
    assert "canonical_acc" not in lines[0].split()  # a metric undefined for every model is left out


def test_mlflow_logging_only_with_a_tracking_uri(tmp_path, monkeypatch):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "x.png").write_bytes(b"png")
    m = metrics_doc(_boot())
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert log_to_mlflow(m, tmp_path, run_id=None, experiment="t") is None

    import mlflow

    monkeypatch.chdir(tmp_path)  # a sqlite store's default artifact root is ./mlruns: keep it out of the repo
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        run_id = log_to_mlflow(m, tmp_path, run_id=None, experiment="ovt-test")
        run = mlflow.get_run(run_id)
        assert run.data.metrics["ovt-base.worst_view_acc"] == pytest.approx(0.5)
        assert not any(math.isnan(v) for v in run.data.metrics.values())
        # a second call logs into the given (training) run rather than a new one
        assert log_to_mlflow({"extra": {"x": 1.0}}, tmp_path, run_id=run_id, experiment="ignored") == run_id
        assert mlflow.get_run(run_id).data.metrics["extra.x"] == 1.0
        arts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "eval")]
        assert "eval/figures" in arts and "eval/metrics.json" in arts
    finally:
        mlflow.set_tracking_uri(None)  # the global would outlive this test's store


def test_model_names_with_dots_are_refused():
    boot = _boot()
    boot["models"]["ovt_wise0.5"] = boot["models"]["ovt"]
    with pytest.raises(ValueError, match="dot"):
        metrics_doc(boot)

"""Validation sweeps: the spec guards the split, the runner resumes and restores params.yaml, the rule selects, the
committed sweep is what params.yaml and docs/experiments.md say, and `dvc exp run -S` takes the generated args."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from ovt import report, sweep
from tests.imports import ROOT

SPEC = {
    "name": "t",
    "fixed": {"evaluate.split": "validation"},
    "grid": {"train.loss.lam": [0.5, 1.0], "train.mining.hard_k": [3, 5]},
    "variants": ["contrastive", "ovt"],
    "metrics": ["mean_acc", "worst_view_acc"],
}


def _spec(**kw):
    return sweep.SweepSpec.model_validate({**SPEC, **kw})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fixed": {}}, "evaluate.split: validation"),
        ({"fixed": {"evaluate.split": "test"}}, "evaluate.split: validation"),
        ({"grid": {}}, "at least one key"),
        ({"grid": {"train.loss.lam": []}}, "at least one value"),
        ({"fixed": {"evaluate.split": "validation", "train.loss.lam": 1}}, "both fixed and swept"),
        ({"select_variant": "base"}, "not among the reported variants"),
        ({"select_variant": ["ovt", "base"]}, r"\['base'\] is not among the reported variants"),
    ],
)
def test_spec_errors_name_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        _spec(**change)


def test_points_in_grid_order_and_dvc_set_args():
    assert sweep.points(_spec()) == [
        {"train.loss.lam": 0.5, "train.mining.hard_k": 3},
        {"train.loss.lam": 0.5, "train.mining.hard_k": 5},
        {"train.loss.lam": 1.0, "train.mining.hard_k": 3},
        {"train.loss.lam": 1.0, "train.mining.hard_k": 5},
    ]
    assert sweep.set_args({"a.b": 0.5, "c": False, "d": [1, 2], "e": "x y"}) == [
        "-S", "a.b=0.5", "-S", "c=false", "-S", "d=[1, 2]", "-S", "e=x y",
    ]  # fmt: skip


def _fake_metrics(point):
    # worst-view peaks at lam 1.0; the mean (the tie-break) favours hard_k 5 and a small lam
    worst = 0.5 - abs(point["train.loss.lam"] - 1.0) / 10
    return {
        "contrastive": {"mean_acc": 0.6, "worst_view_acc": 0.3},
        "ovt": {
            "mean_acc": 0.6 + point["train.mining.hard_k"] / 100 - point["train.loss.lam"] / 100,
            "worst_view_acc": worst,
        },
        "_": {"n_objects": 10, "n_views": 260},
    }


def test_sweep_resumes_restores_params_and_selects(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  loss:\n    lam: 1.0\n")
    out = tmp_path / "sweep.json"
    calls = []

    def run_point(point, spec, cwd):
        calls.append(point)
        params.write_text("changed by dvc exp run\n")
        if len(calls) == 3:
            raise RuntimeError("killed")
        return {"metrics": _fake_metrics(point), "seconds": 60.0}

    with pytest.raises(RuntimeError, match="killed"):
        sweep.run_sweep(_spec(), out, cwd=tmp_path, run_point=run_point)
    assert params.read_text() == "train:\n  loss:\n    lam: 1.0\n", "params.yaml restored after a failure"
    assert len(json.loads(out.read_text())["points"]) == 2, "every finished point was kept"

    doc = sweep.run_sweep(_spec(), out, cwd=tmp_path, run_point=run_point)
    assert [c["train.loss.lam"] for c in calls[3:]] == [1.0, 1.0], "the rerun runs only the missing points"
    assert params.read_text() == "train:\n  loss:\n    lam: 1.0\n"
    assert doc["selected"]["point"] == {"train.loss.lam": 1.0, "train.mining.hard_k": 5}  # best worst-view, tie-break

    # a wider grid with the same fixed overrides keeps the finished points; other fixed overrides rerun everything
    wider = _spec(grid={"train.loss.lam": [0.5, 1.0, 2.0], "train.mining.hard_k": [3, 5]})
    doc = sweep.run_sweep(wider, out, cwd=tmp_path, run_point=run_point)
    assert [c["train.loss.lam"] for c in calls[5:]] == [2.0, 2.0] and len(doc["points"]) == 6
    other = _spec(fixed={"evaluate.split": "validation", "train.epochs": 3})
    sweep.run_sweep(other, out, cwd=tmp_path, run_point=run_point)
    assert len(calls) == 11
    doc = sweep.run_sweep(_spec(), out, cwd=tmp_path, run_point=run_point)  # back: the 'other' points do not count
    assert len(calls) == 15 and doc["selected"]["point"] == {"train.loss.lam": 1.0, "train.mining.hard_k": 5}

    # another rule over the same points reselects without running anything
    by_mean = sweep.run_sweep(
        _spec(select_metric="mean_acc", tie_break="worst_view_acc"), out, cwd=tmp_path, run_point=run_point
    )
    assert len(calls) == 15 and by_mean["selected"]["point"] == {"train.loss.lam": 0.5, "train.mining.hard_k": 5}
    assert json.loads(out.read_text())["selected"] == by_mean["selected"]

    table = sweep.render_table(doc, "sweep.json")
    assert table.count("**(selected)**") == 1 and "| 1.0 **(selected)** | 5 |" in table
    assert "validation split" in table


def test_rule_over_several_variants_takes_their_mean():
    """A budget both variants share is chosen by both: the point with the best mean, not the best of one."""
    metrics = {
        (2, 3e-4): {"contrastive": 0.50, "ovt": 0.60},  # mean .550
        (2, 1e-3): {"contrastive": 0.58, "ovt": 0.55},  # mean .565 <- both
        (4, 3e-4): {"contrastive": 0.40, "ovt": 0.62},  # mean .510 <- ovt alone
        (4, 1e-3): {"contrastive": 0.59, "ovt": 0.52},  # mean .555 <- contrastive alone
    }
    spec = sweep.SweepSpec.model_validate(
        {**SPEC, "grid": {"train.epochs": [2, 4], "train.optim.lr": [3e-4, 1e-3]}, "select_metric": "mean_acc"}
    )
    doc = {"points": []}
    for p in sweep.points(spec):
        m = metrics[(p["train.epochs"], p["train.optim.lr"])]
        doc["points"].append(
            {"id": sweep.point_id(p), "point": p, "metrics": {v: {"mean_acc": a} for v, a in m.items()}}
        )
    chosen = {
        who: sweep.select(doc, spec.model_copy(update={"select_variant": who}))["point"]
        for who in ("ovt", "contrastive")
    }
    assert chosen == {
        "ovt": {"train.epochs": 4, "train.optim.lr": 3e-4},
        "contrastive": {"train.epochs": 4, "train.optim.lr": 1e-3},
    }
    both = spec.model_copy(update={"select_variant": ["contrastive", "ovt"]})
    assert sweep.select(doc, both)["point"] == {"train.epochs": 2, "train.optim.lr": 1e-3}
    none = spec.model_copy(update={"select_variant": None})
    assert sweep.select(doc, none) is None
    assert "No rule: a measurement" in sweep.render_table({**doc, "spec": none.model_dump(mode="json")}, "s.json")
    assert "Rule: highest mean of contrastive and ovt `mean_acc`" in sweep.render_table(
        {**doc, "spec": both.model_dump(mode="json")}, "s.json"
    )


def test_metrics_of_another_split_are_refused(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"split": "test", "ovt": {}, "contrastive": {}}))
    with pytest.raises(ValueError, match="'test' split, not validation"):
        sweep.read_metrics(path, _spec())


@pytest.mark.parametrize("spec_file", sorted(report.SWEEPS.values()))
def test_committed_sweep_is_what_params_and_docs_say(spec_file):
    spec = sweep.load_spec(ROOT / spec_file)
    doc = json.loads((ROOT / spec_file).with_suffix(".json").read_text())
    assert doc["spec"] == spec.model_dump(mode="json"), "the committed sweep ran another spec: rerun `ovt sweep`"
    assert len(doc["points"]) == len(sweep.points(spec)), "the committed sweep is incomplete"
    assert doc["selected"] == sweep.select(doc, spec)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if spec.select_variant is None:  # a measurement: it binds nothing in params.yaml
        assert doc["selected"] is None
    for key, value in (doc["selected"] or {"point": {}})["point"].items():
        node = params
        for part in key.split("."):
            node = node[part]
        assert node == value, f"params.yaml {key} = {node!r}, the validation sweep selected {value!r}"
    text = (ROOT / "docs/experiments.md").read_text()
    _, changed = report.render_text(text, ROOT, report.DOCUMENTS["docs/experiments.md"])
    assert changed == [], "docs/experiments.md is out of date: run `ovt report`"


STAGE = textwrap.dedent(
    """
    import json, yaml
    p = yaml.safe_load(open("params.yaml"))
    lam, k = p["train"]["loss"]["lam"], p["train"]["mining"]["hard_k"]
    acc = {"mean_acc": 0.5, "worst_view_acc": 0.4 - abs(lam - 1.0) / 10 + k / 1000}
    doc = {"split": p["evaluate"]["split"], "n_objects": 3, "n_views": 9, "contrastive": acc, "ovt": acc}
    json.dump(doc, open("data/eval/metrics.json", "w"))
    """
)


@pytest.mark.timeout(300)
def test_real_dvc_exp_run_takes_the_generated_overrides(tmp_path):
    """The real path: `dvc exp run -S` in a git+DVC workspace, metrics read back, params.yaml restored."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "data/eval").mkdir(parents=True)
    (repo / "stage.py").write_text(STAGE)
    params = "evaluate:\n  split: test\ntrain:\n  loss:\n    lam: 1.0\n  mining:\n    hard_k: 5\n"
    (repo / "params.yaml").write_text(params)
    (repo / "dvc.yaml").write_text(
        f"stages:\n  evaluate:\n    cmd: {sys.executable} stage.py\n    deps: [stage.py]\n"
        "    params: [evaluate.split, train.loss.lam, train.mining.hard_k]\n"
        "    metrics:\n      - data/eval/metrics.json: {cache: false}\n"
    )

    def sh(*args):
        subprocess.run(args, cwd=repo, check=True, capture_output=True, text=True)

    sh("git", "init", "-q")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "dvc")
    spec = _spec(grid={"train.loss.lam": [0.5, 1.0]})
    doc = sweep.run_sweep(spec, repo / "sweep.json", cwd=repo)
    assert [r["metrics"]["ovt"]["worst_view_acc"] for r in doc["points"]] == pytest.approx([0.355, 0.405])
    assert doc["selected"]["point"] == {"train.loss.lam": 1.0}
    assert (repo / "params.yaml").read_text() == params
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert shown.count('"lam": 0.5') >= 1 and '"split": "validation"' in shown, "both points are DVC experiments"

"""README numbers are generated: the committed README equals what the committed results render to."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ovt import report
from tests.imports import ROOT

SECTIONS = "".join(f"<!-- ovt-report:{n} -->\n<!-- /ovt-report:{n} -->\n" for n in report.RENDERERS)


def _committed_tree(dest):
    """The committed files (HEAD), not the working tree: an `ovt run` in this checkout rewrites the git-tracked
    metrics with its own wall times, and the README must match the committed record, not the latest local run.
    Outside a git checkout (an sdist), the tree itself is what was shipped."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        return ROOT
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def test_committed_readme_matches_committed_results(tmp_path):
    # The test that fails when a README number differs from data/eval/metrics.json or benchmarks/results/*.json.
    root = _committed_tree(tmp_path)
    text = (root / "README.md").read_text(encoding="utf-8")
    _, changed = report.render_text(text, root)
    assert changed == [], f"README.md sections {changed} are out of date: run `ovt report` and commit"


def _metrics(root, **override):
    doc = {"n_objects": 12, "n_views": 120, "n_classes": 3}
    for g in ("base", "contrastive", "ovt", "ovt-contrastive"):
        doc[g] = {}
        for i, (_, key) in enumerate(report.RESULT_COLUMNS):
            v = 0.5 + 0.01 * i if "-" not in g else 0.0123
            doc[g].update({key: v, f"{key}_lo": v - 0.1, f"{key}_hi": v + 0.1})
    doc.update(override)
    (root / "data" / "eval").mkdir(parents=True, exist_ok=True)
    (root / "data" / "eval" / "metrics.json").write_text(json.dumps(doc))
    return doc


def test_results_table_from_metrics(tmp_path):
    _metrics(tmp_path)
    out = report.render_results(tmp_path)
    assert "n_objects = 12" in out and "data/eval/metrics.json" in out
    assert "| OVT | 50.0 [40.0, 60.0] | 51.0 [41.0, 61.0]" in out
    assert "| Δ OVT − contrastive | +1.2 [-8.8, +11.2]" in out
    assert "ovt_hv" not in out  # absent groups are left out, not invented


def test_seed_pooled_rows_and_per_seed_spread(tmp_path):
    cell = {"worst_view_acc": 0.2, "worst_view_acc_lo": 0.1, "worst_view_acc_hi": 0.3}
    _metrics(
        tmp_path,
        contrastive_x2=cell,
        ovt_x2={**cell, "worst_view_acc": 0.25},
        **{"ovt_x2-contrastive_x2": {**cell, "worst_view_acc": 0.05}},
        ovt_seed1={"worst_view_acc": 0.3, "off_canonical_acc": 0.6},
        contrastive_seed1={"worst_view_acc": 0.2, "off_canonical_acc": 0.55},
    )
    out = report.render_results(tmp_path)
    assert "| OVT, mean of 2 training seeds | – | 25.0 [10.0, 30.0]" in out
    assert "| Δ OVT − contrastive, mean of 2 training seeds | – | +5.0 [+10.0, +30.0]" in out
    # seed 0 from the registered models (0.51 - 0.51 in the fixture), seed 1 from the replicates
    assert "worst-view +0.0, +10.0; off-canonical +0.0, +5.0" in out


def test_pipeline_section_prices_the_seed_replicates(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks/results/pipeline.json").write_text(
        json.dumps({"date": "d", "machine": {}, "stages": [{"stage": "train", "seconds": 90.0, "cpu_seconds": 1.0}]})
    )
    assert "seed replicates" not in report.render_pipeline(tmp_path)
    (tmp_path / "models" / "train_metrics").mkdir(parents=True)
    walls = {"ovt": {"wall_s": 30.0}, "ovt_seed1": {"wall_s": 10.0}, "contrastive_seed1": {"wall_s": 5.5}}
    (tmp_path / "models/train_metrics/metrics.json").write_text(json.dumps(walls))
    assert "15.5 s trained the 2 seed replicates" in report.render_pipeline(tmp_path)


def test_renamed_metric_is_named(tmp_path):
    doc = _metrics(tmp_path)
    key = report.RESULT_COLUMNS[1][1]
    for g in ("base", "contrastive", "ovt", "ovt-contrastive"):
        doc[g][f"{key}_renamed"] = doc[g].pop(key)
    (tmp_path / "data/eval/metrics.json").write_text(json.dumps(doc))
    with pytest.raises(report.ReportError, match=key):
        report.render_results(tmp_path)


def test_pipeline_table_and_check_mode(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks/results/pipeline.json").write_text(
        json.dumps(
            {
                "date": "2026-01-01T00:00:00Z",
                "machine": {"cpus": 2, "load_avg_1m": 0.25},
                "stages": [{"stage": "acquire", "seconds": 61.94, "cpu_seconds": 50.0}],
                "total_s": 700.0,
                "noop_rerun_s": 4.2,
            }
        )
    )
    readme = tmp_path / "README.md"
    readme.write_text("# x\n" + SECTIONS)
    assert report.render_readme(readme, root=tmp_path, check=True) == list(report.RENDERERS)
    assert readme.read_text() == "# x\n" + SECTIONS  # --check changes nothing
    report.render_readme(readme, root=tmp_path)
    text = readme.read_text()
    assert "| acquire | 61.9 | 50.0 |" in text and "2 cores, load average 0.25" in text
    assert report.render_readme(readme, root=tmp_path, check=True) == []
    # a hand edit inside a generated section is caught
    readme.write_text(text.replace("61.9", "42.0"))
    assert report.render_readme(readme, root=tmp_path, check=True) == ["pipeline"]


@pytest.mark.parametrize(
    "value, unit, cell",
    [
        (0.2794, "share", "27.9 %"),  # a fraction in the file, a percentage in the table
        (0.1391, "s", "0.139 s"),  # sub-second times keep three digits
        (12.34, "s", "12.3 s"),
        (96.71, "views/s", "96.7 views/s"),
    ],
)
def test_benchmark_rows_format_by_unit(tmp_path, monkeypatch, value, unit, cell):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks/results/b.json").write_text(json.dumps({"a": {"b": value}}))
    monkeypatch.setattr(report, "BENCHMARKS", (("b.json", "a.b", "thing", unit),))
    assert f"| thing | {cell} | `b.json` `a.b` |" in report.render_benchmarks(tmp_path)


def test_cli_check_fails_on_a_stale_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(SECTIONS)  # empty sections: stale against the repository's results
    res = subprocess.run(
        [sys.executable, "-m", "cli.app", "report", "--check", "--readme", str(readme)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "out of date" in " ".join(res.stderr.split()), res.stderr
    assert readme.read_text() == SECTIONS


def test_missing_section_is_an_error():
    with pytest.raises(report.ReportError, match="no generated section"):
        report.render_text("<!-- ovt-report:results -->\n<!-- /ovt-report:results -->\n", ROOT)

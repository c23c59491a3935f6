"""The committed record: what dvc.yaml keeps out of the DVC cache (`cache: false`) is exactly what git tracks.

A metric or plot that is neither in git nor in the DVC cache cannot be compared (`dvc metrics diff HEAD`,
`dvc plots diff`, `dvc exp show` show nothing); a big output that git does not ignore ends up in a commit.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.imports import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))


def _outs() -> tuple[list[str], list[str]]:
    """(git-tracked, DVC-cached) output paths of every stage."""
    tracked, cached = [], []
    for stage in DVC["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                (tracked if (opts or {}).get("cache", True) is False else cached).append(path)
    return tracked, cached


def _ignored(path: str) -> bool:
    # --no-index: the answer from .gitignore alone, whether or not the file exists or is already committed
    rc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT).returncode
    assert rc in (0, 1), f"git check-ignore failed on {path}"
    return rc == 0


TRACKED, CACHED = _outs()


@pytest.mark.parametrize("path", TRACKED)
def test_uncached_metrics_and_plots_are_not_git_ignored(path):
    assert not _ignored(path), f"{path} is `cache: false` in dvc.yaml but git-ignored: un-ignore it in .gitignore"


@pytest.mark.parametrize("path", CACHED)
def test_cached_outputs_are_git_ignored(path):
    assert _ignored(path), f"{path} is a DVC-cached output but git does not ignore it"
    assert _ignored(f"{path}/some-file"), f"files inside {path} are not git-ignored"


def test_metrics_are_small_files_and_every_plot_is_declared_once():
    # files, or dvclive's step-metric folders (small .tsv files, one per metric)
    assert all(p.endswith((".json", ".csv", ".png", ".yaml", "/plots/metrics")) for p in TRACKED), TRACKED
    top = [next(iter(e)) if isinstance(e, dict) else e for e in DVC.get("plots", [])]
    stage_plots = [
        next(iter(e)) if isinstance(e, dict) else e for s in DVC["stages"].values() for e in (s.get("plots") or [])
    ]
    assert len(top + stage_plots) == len(set(top + stage_plots)), "a plot is declared twice"
    assert set(top + stage_plots) <= set(TRACKED), "a plot file is not a git-tracked stage output"

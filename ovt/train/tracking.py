"""Step metrics: kept in the run's state (so a resumed run has its whole history), written through dvclive.

`write_live(dir, history)` (re)writes a variant's dvclive folder from its full history: `metrics.json` (last values)
and `plots/metrics/<name>.tsv` per metric, which `dvc plots` and `dvc exp show` read. Writing from the history,
not appending while training, keeps the files exact after a kill and resume (no steps logged twice) and lets a
finished, skipped variant rewrite them from its saved history. MLflow is opt-in (`tracking.mlflow: true` or
MLFLOW_TRACKING_URI in the environment) so tests and `dvc repro` on a bare machine never try to reach a server.
Only rank 0 tracks.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ovt.io import atomic_write_json

log = logging.getLogger(__name__)

STEP_METRICS = ["loss", "loss_itc", "loss_vc", "lr", "hard_in_batch", "samples_per_s"]
HISTORY = "history.json"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """Step rows and per-epoch events (mining passes) of one variant; mirrored to MLflow when enabled."""

    def __init__(self, enabled: bool, use_mlflow: bool, experiment: str, run_name: str, params: dict):
        self.enabled = enabled
        self.rows: list[dict] = []
        self.events: list[dict] = []
        self._mlflow = None
        if enabled and (use_mlflow or os.environ.get("MLFLOW_TRACKING_URI")):
            import mlflow

            mlflow.set_experiment(experiment)
            mlflow.start_run(run_name=run_name)
            # MLflow caps param values at 6000 chars and rejects None-heavy nesting; flatten and stringify.
            mlflow.log_params({k: str(v)[:500] for k, v in _flatten(params).items()})
            self._mlflow = mlflow

    def step(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        if self._mlflow:
            self._mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "step"}, step=int(row["step"]))

    def event(self, row: dict, step: int) -> None:
        if not self.enabled:
            return
        self.events.append({**row, "step": step})
        if self._mlflow:
            self._mlflow.log_metrics({k: float(v) for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def history(self) -> dict:
        return {"steps": list(self.rows), "events": list(self.events)}

    def summary(self, stats: dict) -> None:
        if self._mlflow:
            self._mlflow.log_metrics(
                {k: float(v) for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )

    def close(self) -> None:
        if self._mlflow:
            self._mlflow.end_run()
            self._mlflow = None


def write_live(live_dir: Path, history: dict, summary: dict | None = None) -> None:
    """Rewrite `live_dir` through dvclive from a variant's whole history (steps, mining events, final summary)."""
    from dvclive import Live

    live_dir = Path(live_dir)
    if live_dir.exists():
        shutil.rmtree(live_dir)
    rows = sorted(history.get("steps", []), key=lambda r: r["step"])
    events = {e["step"]: e for e in history.get("events", [])}
    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)
    try:
        for row in rows:
            live.step = int(row["step"])
            for name in STEP_METRICS:
                if isinstance(row.get(name), (int, float)):
                    live.log_metric(name, float(row[name]))
            ev = events.get(row["step"] - 1)  # a mining pass runs before the first step of its epoch
            if ev is not None:
                for name, v in ev.items():
                    if name.startswith("mined/") or name == "mining_s":
                        live.log_metric(name.replace("/", "_"), float(v))
        for name, v in (summary or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                live.summary[name] = v
        live.make_summary()
    finally:
        live.end()
    atomic_write_json(live_dir / HISTORY, history)  # the raw record, beside what dvclive drew from it

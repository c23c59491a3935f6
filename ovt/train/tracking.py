"""Metrics sinks: a JSON summary + per-step CSV (DVC metrics/plots) always; MLflow when asked for.

MLflow is opt-in (`tracking.mlflow: true` or MLFLOW_TRACKING_URI in the environment) so tests and `dvc repro` on a
bare machine never try to reach a server. Only rank 0 tracks.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

from ovt.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

STEP_FIELDS = ["step", "epoch", "lr", "loss", "loss_itc", "loss_vc", "hard_in_batch", "samples_per_s"]


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
    def __init__(self, enabled: bool, use_mlflow: bool, experiment: str, run_name: str, params: dict):
        self.enabled = enabled
        self.rows: list[dict] = []
        self.events: list[dict] = []  # mining passes and other per-epoch records
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
        self.events.append(row)
        if self._mlflow:
            self._mlflow.log_metrics({k: float(v) for k, v in row.items() if isinstance(v, (int, float))},
                                     step=step)

    def write(self, csv_path: Path, json_path: Path, summary: dict) -> None:
        if not self.enabled:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=STEP_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(csv_path, buf.getvalue())
        atomic_write_json(json_path, summary)
        if self._mlflow:
            self._mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})

    def close(self) -> None:
        if self._mlflow:
            self._mlflow.end_run()
            self._mlflow = None

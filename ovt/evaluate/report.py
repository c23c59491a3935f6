"""Outputs of the evaluate stage: metrics.json, plot data for DVC, the summary table, MLflow (figures: figures.py).

metrics.json is a tree whose dotted paths (`ovt.worst_view_acc`, `ovt.worst_view_acc_lo`,
`ovt-contrastive.mean_acc`) are what `dvc metrics diff` prints, so base and tuned values and their differences line
up one per row.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ovt.io import atomic_write_text

log = logging.getLogger(__name__)

# Metrics shown in the summary table, in reading order.
TABLE_METRICS = (
    "mean_acc",
    "worst_view_acc",
    "canonical_acc",
    "off_canonical_acc",
    "canonical_gap",
    "band_acc",
    "worst_view_margin",
    "search_worst_margin",
    "search_fooled_rate",
    "search_median_renders",
    "consistency",
)
# Shown as they are (cosine margins, render counts); every other metric is a fraction shown in %.
UNSCALED = ("worst_view_margin", "search_worst_margin", "search_median_renders")


def metrics_doc(boot: Mapping[str, Mapping], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json: {"<model>": {"<metric>": v, "<metric>_lo": lo, "<metric>_hi": hi}, "<a>-<b>": {...}, ...}.

    Nested, so `dvc metrics diff` shows `ovt.worst_view_acc` and a dotted lookup (the registry's gate) finds the
    same path; model names therefore never contain a dot. Undefined values (NaN) become null: NaN is not JSON.
    `extra` keys are dotted paths ("n_objects", "ovt.bench.toy.top1") merged into the tree.
    """
    doc: dict[str, Any] = {}

    def put(path: str, v: Any) -> None:
        *parents, leaf = path.split(".")
        cur = doc
        for p in parents:
            cur = cur.setdefault(p, {})
        if isinstance(v, float):
            v = round(v, 6) if math.isfinite(v) else None
        cur[leaf] = v

    for group in ("models", "diffs"):
        for name, metrics in boot[group].items():
            if "." in name:
                raise ValueError(f"model name {name!r} contains a dot, which would break dotted metric paths")
            for metric, r in metrics.items():
                put(f"{name}.{metric}", r["value"])
                put(f"{name}.{metric}_lo", r["lo"])
                put(f"{name}.{metric}_hi", r["hi"])
    for k, v in (extra or {}).items():
        put(k, v)
    return doc


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys, as `dvc metrics show` prints them (and as MLflow metric names)."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def grid_rows(model: str, acc: np.ndarray, counts: np.ndarray, edges: Sequence[float]) -> list[dict]:
    n_az = acc.shape[1]
    width = 360.0 / n_az
    rows = []
    for b in range(acc.shape[0]):
        for a in range(n_az):
            if counts[b, a] == 0:
                continue
            rows.append(
                {
                    "model": model,
                    "elevation_band": f"[{edges[b]:g},{edges[b + 1]:g})",
                    "elevation_mid": (edges[b] + edges[b + 1]) / 2,
                    "azimuth_bin": a,
                    "azimuth_centre": ((a * width + 180.0) % 360.0) - 180.0,
                    "acc": float(acc[b, a]),
                    "n_views": int(counts[b, a]),
                }
            )
    return rows


def summary_table(boot: Mapping[str, Mapping], style: str = "rich") -> str:
    """Per-model metrics with 95% intervals, then pairwise differences; printed and returned as text.

    Fractions in % (differences in pp); margins in cosine units; median renders as counts."""
    metrics = [m for m in TABLE_METRICS if any(math.isfinite(r[m]["value"]) for r in boot["models"].values())]

    def cell(r: Mapping[str, float], metric: str) -> str:
        if not math.isfinite(r["value"]):
            return "-"
        scale, digits = (1.0, 3) if metric.endswith("margin") else (1.0, 1) if metric in UNSCALED else (100.0, 1)
        # "+ 0.0" turns IEEE -0.0 into 0.0, so a null difference never prints as "-0.0"
        v, lo, hi = (
            round(scale * r[k], digits) + 0.0 if math.isfinite(r[k]) else math.nan for k in ("value", "lo", "hi")
        )
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    header = ["model"] + metrics
    body = [[name] + [cell(r[m], m) for m in metrics] for name, r in boot["models"].items()]
    body += [[f"Δ {name}"] + [cell(r[m], m) for m in metrics] for name, r in boot["diffs"].items()]
    if style == "rich":
        from rich.console import Console
        from rich.table import Table

        table = Table(title="test objects: % (95% paired bootstrap CI), margins in cosine units; Δ rows in pp")
        for h in header:
            table.add_column(h, no_wrap=(h == "model"))
        for row in body:
            table.add_row(*row)
        Console(stderr=True, width=260).print(table)
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header] + body)
    if style == "plain":
        print(text)
    return text


def log_to_mlflow(
    metrics: Mapping[str, Any], artifacts_dir: Path, *, run_id: str | None, experiment: str
) -> str | None:
    """Log metrics (a metrics_doc tree) and the output folder to MLflow when MLFLOW_TRACKING_URI is set, into
    `run_id` (the training run) when given, else a new "evaluate" run; returns the run id used."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    import mlflow

    numeric = {
        k: float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    if run_id:
        ctx = mlflow.start_run(run_id=run_id)
    else:
        mlflow.set_experiment(experiment)
        ctx = mlflow.start_run(run_name="evaluate")
    with ctx as run:
        keys = sorted(numeric)
        for i in range(0, len(keys), 500):  # MLflow's batch limit is 1000 metrics per call
            mlflow.log_metrics({k: numeric[k] for k in keys[i : i + 500]})
        for sub in ("plots", "figures"):
            if (artifacts_dir / sub).is_dir():
                mlflow.log_artifacts(str(artifacts_dir / sub), artifact_path=f"eval/{sub}")
        mlflow.log_artifact(str(artifacts_dir / "metrics.json"), artifact_path="eval")
        return run.info.run_id

"""Validation sweeps: every modelling choice is read off the validation split, never the test split.

A sweep spec (YAML, e.g. experiments/validation_sweep.yaml) names fixed overrides (which must evaluate on the
validation split) and a grid. Each grid point is one `dvc exp run -S key=value …` in the workspace, so DVC reruns
only the stages the changed params feed (train's per-variant content keys skip variants a param does not touch);
after each point the validation metrics are appended to a results JSON (atomic, one point at a time, so a killed
sweep resumes where it stopped). `select` applies the spec's rule to the results; `ovt report` renders the table
into docs/experiments.md and tests/test_sweep.py checks that params.yaml holds the selected values.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from ovt.io import atomic_write_json, atomic_write_text
from ovt.params_base import StrictModel

log = logging.getLogger(__name__)

METRICS_FILE = "data/eval/metrics.json"


class SweepSpec(StrictModel):
    name: str
    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)  # overrides applied at every point
    grid: dict[str, list[Any]]  # dotted params key -> values; points are the Cartesian product, in order
    # the rule: the point where this variant's metric (several variants: their mean) is highest on validation; a
    # budget both compared variants share is chosen by both, so the baseline gets the same rule as OVT. None: a
    # measurement, not a choice (e.g. a learning curve beyond what the default's run time affords): no point is
    # selected and params.yaml is not bound to the grid
    select_variant: str | list[str] | None = "ovt"
    select_metric: str = "worst_view_acc"
    tie_break: str = "mean_acc"
    variants: list[str] = ["base", "contrastive", "ovt"]  # reported per point
    metrics: list[str] = ["mean_acc", "worst_view_acc", "canonical_acc", "off_canonical_acc"]

    @model_validator(mode="after")
    def _validation_only(self) -> SweepSpec:
        if self.fixed.get("evaluate.split") != "validation":
            raise ValueError(
                "a sweep must set `evaluate.split: validation` in `fixed`: choices never read the test split"
            )
        if not self.grid or any(not v for v in self.grid.values()):
            raise ValueError("the grid needs at least one key, each with at least one value")
        if overlap := set(self.fixed) & set(self.grid):
            raise ValueError(f"keys both fixed and swept: {sorted(overlap)}")
        if missing := [v for v in self.selected_by if v not in self.variants]:
            raise ValueError(f"select_variant {missing} is not among the reported variants")
        return self

    @property
    def selected_by(self) -> list[str]:
        if self.select_variant is None:
            return []
        return [self.select_variant] if isinstance(self.select_variant, str) else list(self.select_variant)


def load_spec(path: str | Path) -> SweepSpec:
    return SweepSpec.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def points(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = list(spec.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(spec.grid[k] for k in keys))]


def point_id(point: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:12]


def set_args(overrides: Mapping[str, Any]) -> list[str]:
    """`-S key=value` pairs for `dvc exp run` (values in YAML flow style, which is what DVC parses)."""
    out: list[str] = []
    for k, v in overrides.items():
        out += ["-S", f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return out


def read_metrics(path: Path, spec: SweepSpec) -> dict[str, dict[str, float]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("split") != "validation":
        raise ValueError(f"{path} holds metrics of the {doc.get('split')!r} split, not validation")
    out: dict[str, dict[str, float]] = {}
    for v in spec.variants:
        if v not in doc:
            raise KeyError(
                f"{path} has no metrics for variant {v!r} (has {sorted(k for k in doc if isinstance(doc[k], dict))})"
            )
        out[v] = {m: doc[v][m] for m in spec.metrics if m in doc[v]}
    out["_"] = {"n_objects": doc.get("n_objects"), "n_views": doc.get("n_views")}
    return out


def run_point_with_dvc(point: Mapping[str, Any], spec: SweepSpec, cwd: Path) -> dict:
    """One `dvc exp run` in the workspace at `cwd`; returns the validation metrics it wrote."""
    from ovt import dvc_driver

    res = dvc_driver.run_dvc(["exp", "run", *set_args({**spec.fixed, **point})], cwd=cwd)
    return {"metrics": read_metrics(cwd / METRICS_FILE, spec), "seconds": round(res.seconds, 1)}


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    cwd: Path,
    run_point: Callable[[Mapping[str, Any], SweepSpec, Path], dict] = run_point_with_dvc,
) -> dict:
    """Run every point not yet in `out` (resume), writing `out` after each; params.yaml is restored afterwards
    (a workspace `dvc exp run` leaves its -S values in it)."""
    doc = json.loads(out.read_text()) if out.is_file() else {}
    old = doc.get("spec")
    if old is not None and old != spec.model_dump(mode="json"):
        # a point's metrics depend on the fixed overrides and the point itself: with the same fixed overrides and
        # reported columns, points of the old grid that are in the new one stay valid (widening a grid reruns nothing)
        same = all(old.get(k) == getattr(spec, k) for k in ("fixed", "variants", "metrics"))
        wanted = {point_id(p) for p in points(spec)}
        kept = [r for r in doc.get("points", []) if same and r["id"] in wanted]
        log.warning("sweep %s: the spec changed since %s was written; keeping %d point(s)", spec.name, out, len(kept))
        doc = {"points": kept}
    doc.update(spec=spec.model_dump(mode="json"))
    done = {r["id"] for r in doc.setdefault("points", [])}
    params = cwd / "params.yaml"
    original = params.read_text(encoding="utf-8")
    try:
        grid = points(spec)
        for i, point in enumerate(grid):
            pid = point_id(point)
            if pid in done:
                continue
            log.info("sweep %s: point %d/%d %s", spec.name, i + 1, len(grid), point)
            row = run_point(point, spec, cwd)
            doc["points"].append({"id": pid, "point": point, **row})
            doc["selected"] = select(doc, spec)
            atomic_write_json(out, doc)
        doc["selected"] = select(doc, spec)  # the rule may have changed while every point was already there
        atomic_write_json(out, doc)
    finally:
        if params.read_text(encoding="utf-8") != original:
            atomic_write_text(params, original)
    return doc


def select(doc: Mapping[str, Any], spec: SweepSpec) -> dict[str, Any] | None:
    """The point with the highest validation `select_metric` of `select_variant` (the mean over them when several;
    ties: `tie_break` likewise, then grid order)."""
    order = {point_id(p): i for i, p in enumerate(points(spec))}
    rows = [r for r in doc.get("points", []) if r["id"] in order]
    if not rows or not spec.selected_by:
        return None

    by = spec.selected_by

    def mean(r: Mapping[str, Any], metric: str) -> float:
        return sum(r["metrics"][v].get(metric, 0.0) for v in by) / len(by)

    def key(r: Mapping[str, Any]) -> tuple[float, float, int]:
        if missing := [v for v in by if spec.select_metric not in r["metrics"][v]]:
            raise KeyError(f"sweep {spec.name}: point {r['point']} has no {spec.select_metric} for {missing}")
        return (mean(r, spec.select_metric), mean(r, spec.tie_break), -order[r["id"]])

    best = max(rows, key=key)
    return {"id": best["id"], "point": best["point"]}


def render_table(doc: Mapping[str, Any], source: str) -> str:
    """docs/experiments.md's generated section: one row per point, accuracies in % on the validation split."""
    spec = SweepSpec.model_validate(doc["spec"])
    keys = list(spec.grid)
    cols = [(v, m) for v in spec.variants for m in spec.metrics]
    head = "| " + " | ".join([*(f"`{k}`" for k in keys), *(f"{v} {m.removesuffix('_acc')}" for v, m in cols)])
    lines = [head + " |", "|" + "---|" * (len(keys) + len(cols))]
    chosen = (doc.get("selected") or {}).get("id")
    for r in doc.get("points", []):
        vals = [json.dumps(r["point"][k]) for k in keys]
        accs = [f"{100 * r['metrics'][v][m]:.1f}" if m in r["metrics"].get(v, {}) else "–" for v, m in cols]
        if r["id"] == chosen:
            vals[0] += " **(selected)**"
        lines.append("| " + " | ".join([*vals, *accs]) + " |")
    n = (doc["points"][0]["metrics"].get("_") or {}) if doc.get("points") else {}
    by = spec.selected_by
    rule = by[0] if len(by) == 1 else "mean of " + " and ".join(by)
    rule_text = (
        f"Rule: highest {rule} `{spec.select_metric}`, ties by `{spec.tie_break}`. "
        if by
        else "No rule: a measurement, not a choice (params.yaml is not bound to it). "
    )
    return (
        f"From `{source}` (sweep `{spec.name}`: {len(doc.get('points', []))} points, validation split, "
        f"n_objects = {n.get('n_objects')}, n_views = {n.get('n_views')}; fixed: "
        + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in spec.fixed.items())
        + "). "
        + rule_text
        + "Accuracy in %.\n\n"
        + "\n".join(lines)
        + "\n"
    )

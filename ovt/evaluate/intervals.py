"""Confidence intervals: paired bootstrap over the scored objects.

Objects, not views, are the independent units (views of one object are strongly correlated), so resampling draws
objects with replacement. One set of resample weights is shared by every model: the interval of a difference
between two models then reflects only how their per-object results differ (a paired test).
"""

from __future__ import annotations

from itertools import combinations
from typing import Mapping

import numpy as np

from ovt.evaluate.metrics import METRICS, point_metrics, weighted_metrics


def resample_weights(n_objects: int, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_objects] draw counts: row r says how often each object appears in resample r."""
    if n_objects < 1:
        raise ValueError("bootstrap needs at least one object")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_objects, size=(n_resamples, n_objects))
    w = np.zeros((n_resamples, n_objects))
    np.add.at(w, (np.arange(n_resamples)[:, None], draws), 1.0)
    return w


def _interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - ci) / 2.0
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return float(lo), float(hi)


def paired_bootstrap(
    stats_by_model: Mapping[str, np.ndarray], *, n_resamples: int = 1000, ci: float = 0.95, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Point estimates and percentile intervals for every metric of every model and every pairwise difference.

    Returns {"models": {model: {metric: {value, lo, hi}}}, "diffs": {"a-b": {metric: {value, lo, hi}}}}
    where "a-b" is model a minus model b, for every ordered pair in the given order (a after b).
    """
    names = list(stats_by_model)
    if not names:
        raise ValueError("paired_bootstrap: no models")
    shapes = {n: s.shape for n, s in stats_by_model.items()}
    if len({s[0] for s in shapes.values()}) != 1:
        raise ValueError(f"paired_bootstrap needs the same objects for every model; got shapes {shapes}")
    n_obj = shapes[names[0]][0]
    w = resample_weights(n_obj, n_resamples, seed)
    samples = {n: weighted_metrics(s, w) for n, s in stats_by_model.items()}
    points = {n: point_metrics(s) for n, s in stats_by_model.items()}

    out: dict[str, dict] = {"models": {}, "diffs": {}}
    for n in names:
        out["models"][n] = {
            m: {"value": points[n][m], **dict(zip(("lo", "hi"), _interval(samples[n][m], ci)))} for m in METRICS
        }
    # Later models minus earlier ones, so "ovt-base" and "ovt-contrastive" read as gains when models are listed
    # base, contrastive, ovt.
    for b, a in combinations(names, 2):
        out["diffs"][f"{a}-{b}"] = {
            m: {
                "value": points[a][m] - points[b][m],
                **dict(zip(("lo", "hi"), _interval(samples[a][m] - samples[b][m], ci))),
            }
            for m in METRICS
        }
    return out

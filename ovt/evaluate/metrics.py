"""Viewpoint-robustness metrics from per-view predictions.

Everything is reduced first to a small per-object table of counts (`object_stats`); every metric is then a ratio
of weighted column sums. The point estimate uses weight 1 per object and a bootstrap resample uses the number of
times each object was drawn, so the bootstrap (intervals.py) is one matrix product and pairs models exactly. The
one metric that is not a ratio, the Kaplan-Meier median of renders to the search's first error, is computed from
the same weighted sums (per render count), so it resamples the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ovt.evaluate.zeroshot import topk_correct

# Per-object columns of the stats table.
COLUMNS = (
    "n",  # views
    "top1",  # views classified correctly
    "topk",  # views whose class is in the top k
    "n_can",  # canonical views
    "top1_can",
    "n_off",  # off-canonical views
    "top1_off",
    "all_top1",  # 1 if every view is correct (worst-view accuracy)
    "one",  # 1 (object count)
    "consistency",  # mean cosine of the object's views to their normalised centre
    "n_band",  # views in the elevation band(s) the *_hv variants never saw in training
    "top1_band",
    "all_band",  # 1 if the object has band views and all are correct
    "has_band",  # 1 if the object has any band view
    "worst_margin",  # true-class margin of the object's worst rendered view (cosine units; < 0 = misclassified)
    "search_margin",  # worst margin over the rendered views and the search's renders (0 where not searched)
    "search_fooled",  # 1 if some render of the search was misclassified (the event of the time-to-error)
    "search_time",  # renders until the first error, or the renders spent when none was found (censored)
    "has_search",  # 1 if the object was searched
)
COL = {c: i for i, c in enumerate(COLUMNS)}

# metric -> (numerator column, denominator column); all are fractions in [0, 1].
RATIOS: dict[str, tuple[str, str]] = {
    "mean_acc": ("top1", "n"),
    "topk_acc": ("topk", "n"),
    "worst_view_acc": ("all_top1", "one"),
    "canonical_acc": ("top1_can", "n_can"),
    "off_canonical_acc": ("top1_off", "n_off"),
    "consistency": ("consistency", "one"),
    "band_acc": ("top1_band", "n_band"),
    "band_worst_acc": ("all_band", "has_band"),
}
# Means over objects (not fractions): margins in cosine units, in [-2, 2].
MEANS: dict[str, tuple[str, str]] = {
    "worst_view_margin": ("worst_margin", "one"),
    "search_worst_margin": ("search_margin", "has_search"),
    "search_fooled_rate": ("search_fooled", "has_search"),
}
# Derived as differences of ratios: the canonical/off-canonical gap (positive = canonical bias).
DERIVED: dict[str, tuple[str, str]] = {"canonical_gap": ("canonical_acc", "off_canonical_acc")}
# Kaplan-Meier median of renders to the search's first error over the searched objects, censored where the budget
# ran out first; a value above the budget means the median was not reached within it.
SURVIVAL = ("search_median_renders",)
METRICS: tuple[str, ...] = tuple(RATIOS) + tuple(DERIVED) + tuple(MEANS) + SURVIVAL


@dataclass
class ViewResults:
    """One model's predictions on the scored views (row i = view i, identical row order for every model)."""

    object_index: np.ndarray  # [N] int, 0..n_objects-1
    target: np.ndarray  # [N] int class index
    logits: np.ndarray  # [N, C]
    embeddings: np.ndarray  # [N, D] L2-normalised
    elevation: np.ndarray  # [N] degrees
    azimuth: np.ndarray  # [N] degrees
    canonical: np.ndarray  # [N] bool
    top_k: int = 5
    logit_scale: float = 100.0  # the classifier's fixed scale: margins are reported in cosine units
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = len(self.target)
        for name in ("object_index", "logits", "embeddings", "elevation", "azimuth", "canonical"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ViewResults.{name} has {len(getattr(self, name))} rows, target has {n}")
        if n == 0:
            raise ValueError("ViewResults: no views")

    @property
    def pred(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.target

    @property
    def correct_topk(self) -> np.ndarray:
        return topk_correct(self.logits, self.target, self.top_k)

    @property
    def margin(self) -> np.ndarray:
        """[N] true-class margin: true logit minus the best other logit, over the scale (cosine units)."""
        return true_margin(self.logits, self.target) / self.logit_scale

    @property
    def true_prob(self) -> np.ndarray:
        p = torch.as_tensor(self.logits, dtype=torch.float64).softmax(dim=1).numpy()
        return p[np.arange(len(self.target)), self.target]


def true_margin(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[N] logit of the true class minus the highest other logit (< 0 exactly when the view is misclassified,
    ties aside)."""
    logits = np.asarray(logits, dtype=np.float64)
    idx = np.arange(len(logits))
    true = logits[idx, target]
    other = logits.copy()
    other[idx, target] = -np.inf
    return true - other.max(axis=1)


def in_bands(elevation: np.ndarray, bands: list[tuple[float, float]]) -> np.ndarray:
    """Boolean mask of views whose elevation lies in any closed band [lo, hi]."""
    elevation = np.asarray(elevation, dtype=float)
    mask = np.zeros(elevation.shape, dtype=bool)
    for lo, hi in bands:
        mask |= (elevation >= lo) & (elevation <= hi)
    return mask


def consistency_per_object(embeddings: np.ndarray, object_index: np.ndarray, n_objects: int) -> np.ndarray:
    """Mean cosine of each object's view embeddings to their normalised mean (1.0 = perfectly invariant)."""
    z = F.normalize(torch.as_tensor(embeddings, dtype=torch.float64), dim=1)
    idx = torch.as_tensor(object_index, dtype=torch.long)
    centres = torch.zeros(n_objects, z.shape[1], dtype=torch.float64).index_add_(0, idx, z)
    centres = F.normalize(centres, dim=1)
    cos = (z * centres[idx]).sum(dim=1)
    sums = torch.zeros(n_objects, dtype=torch.float64).index_add_(0, idx, cos)
    counts = torch.bincount(idx, minlength=n_objects).to(torch.float64)
    return (sums / counts.clamp(min=1)).numpy()


def object_stats(
    res: ViewResults, bands: list[tuple[float, float]] | None = None, search: np.ndarray | None = None
) -> np.ndarray:
    """[n_objects, len(COLUMNS)] table of per-object counts (see COLUMNS).

    `search`: [n_objects, 3] per object (worst margin found by the search, renders to first error or spent,
    1/0 error found), NaN rows where the object was not searched (`worst_case.search_table`).
    """
    obj = np.asarray(res.object_index, dtype=np.int64)
    n_obj = int(obj.max()) + 1
    if set(np.unique(obj)) != set(range(n_obj)):
        raise ValueError("object_index must cover 0..n_objects-1 without gaps")
    correct = res.correct.astype(float)
    can = np.asarray(res.canonical, dtype=bool)
    hv = in_bands(res.elevation, bands or [])

    def per_obj(values: np.ndarray) -> np.ndarray:
        return np.bincount(obj, weights=values.astype(float), minlength=n_obj)

    s = np.zeros((n_obj, len(COLUMNS)))
    s[:, COL["n"]] = per_obj(np.ones_like(correct))
    s[:, COL["top1"]] = per_obj(correct)
    s[:, COL["topk"]] = per_obj(res.correct_topk)
    s[:, COL["n_can"]] = per_obj(can)
    s[:, COL["top1_can"]] = per_obj(correct * can)
    s[:, COL["n_off"]] = per_obj(~can)
    s[:, COL["top1_off"]] = per_obj(correct * ~can)
    s[:, COL["all_top1"]] = s[:, COL["top1"]] == s[:, COL["n"]]
    s[:, COL["one"]] = 1.0
    s[:, COL["consistency"]] = consistency_per_object(res.embeddings, obj, n_obj)
    s[:, COL["n_band"]] = per_obj(hv)
    s[:, COL["top1_band"]] = per_obj(correct * hv)
    s[:, COL["has_band"]] = s[:, COL["n_band"]] > 0
    s[:, COL["all_band"]] = (s[:, COL["has_band"]] > 0) & (s[:, COL["top1_band"]] == s[:, COL["n_band"]])
    worst = np.full(n_obj, np.inf)
    np.minimum.at(worst, obj, res.margin)
    s[:, COL["worst_margin"]] = worst
    if search is not None:
        found = np.asarray(search, dtype=float)
        if found.shape != (n_obj, 3):
            raise ValueError(f"search table has shape {found.shape}, expected ({n_obj}, 3)")
        has = np.isfinite(found[:, 0])
        s[:, COL["has_search"]] = has
        # the search starts from the rendered views' worst: never report a weaker worst case than the grid's
        s[:, COL["search_margin"]] = np.where(has, np.minimum(np.nan_to_num(found[:, 0]), worst), 0.0)
        s[:, COL["search_time"]] = np.where(has, np.nan_to_num(found[:, 1]), 0.0)
        s[:, COL["search_fooled"]] = np.where(has, np.nan_to_num(found[:, 2]), 0.0)
    return s


def km_median(time: np.ndarray, event: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kaplan-Meier median of integer times (>= 1) per row of `weights` ([R, n] object draw counts) -> [R].

    Objects with weight 0 in a row are absent from it; censored objects (event 0) leave the risk set after their
    time. The median is the first time where survival drops to 1/2 or below; `max(time) + 1` where it never does
    (not reached within the budget), NaN where a row has no object."""
    time = np.asarray(time, dtype=np.int64)
    event = np.asarray(event, dtype=bool)
    weights = np.atleast_2d(weights)
    if time.size == 0:
        return np.full(weights.shape[0], np.nan)
    t_max = int(time.max())
    grid = np.arange(1, t_max + 1)
    at_risk = (time[:, None] >= grid[None, :]).astype(float)  # [n, T]
    dies = ((time[:, None] == grid[None, :]) & event[:, None]).astype(float)
    n = weights @ at_risk  # [R, T]
    d = weights @ dies
    with np.errstate(invalid="ignore", divide="ignore"):
        surv = np.cumprod(np.where(n > 0, 1.0 - d / np.where(n > 0, n, 1.0), 1.0), axis=1)
    below = surv <= 0.5
    out = np.where(below.any(axis=1), grid[np.argmax(below, axis=1)], t_max + 1).astype(float)
    return np.where(weights.sum(axis=1) > 0, out, np.nan)


def weighted_metrics(stats: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of `weights` ([R, n_objects] draw counts) -> {metric: [R]} (NaN if undefined)."""
    weights = np.atleast_2d(weights)
    sums = weights @ stats  # [R, columns]
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, (num, den) in RATIOS.items():
            d = sums[:, COL[den]]
            out[name] = np.where(d > 0, sums[:, COL[num]] / np.where(d > 0, d, 1), np.nan)
    for name, (num, den) in MEANS.items():
        d = sums[:, COL[den]]
        out[name] = np.where(d > 0, sums[:, COL[num]] / np.where(d > 0, d, 1), np.nan)
    for name, (a, b) in DERIVED.items():
        out[name] = out[a] - out[b]
    searched = stats[:, COL["has_search"]] > 0
    out["search_median_renders"] = (
        km_median(stats[searched, COL["search_time"]], stats[searched, COL["search_fooled"]] > 0, weights[:, searched])
        if searched.any()
        else np.full(weights.shape[0], np.nan)
    )
    return out


def point_metrics(stats: np.ndarray) -> dict[str, float]:
    """Metrics on the scored set itself (every object once)."""
    return {k: float(v[0]) for k, v in weighted_metrics(stats, np.ones((1, stats.shape[0]))).items()}


def azimuth_bin(azimuth: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index with bin 0 centred on azimuth 0 (front), so a ring of n_bins views falls one per bin."""
    width = 360.0 / n_bins
    return (np.floor(((np.asarray(azimuth, float) + width / 2) % 360.0) / width).astype(int)) % n_bins


def elevation_band(elevation: np.ndarray, edges: list[float]) -> np.ndarray:
    """Band index for ascending edges; the last band includes its upper edge; outside -> clipped to the ends."""
    idx = np.searchsorted(np.asarray(edges, float), np.asarray(elevation, float), side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def accuracy_grid(
    correct: np.ndarray, elevation: np.ndarray, azimuth: np.ndarray, edges: list[float], n_az: int
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy [n_bands, n_az] (NaN where empty) and view counts per (elevation band, azimuth bin) cell."""
    band = elevation_band(elevation, edges)
    az = azimuth_bin(azimuth, n_az)
    flat = band * n_az + az
    size = (len(edges) - 1) * n_az
    counts = np.bincount(flat, minlength=size).reshape(-1, n_az)
    hits = np.bincount(flat, weights=np.asarray(correct, float), minlength=size).reshape(-1, n_az)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return acc, counts

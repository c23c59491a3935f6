import numpy as np

from ovt.evaluate.intervals import paired_bootstrap, resample_weights
from ovt.evaluate.metrics import COL, COLUMNS


def _stats(correct_per_object, views=4):
    """Per-object stats for objects whose views are all right (1) or all wrong (0)."""
    c = np.asarray(correct_per_object, float)
    s = np.zeros((len(c), len(COLUMNS)))
    s[:, COL["n"]] = views
    s[:, COL["top1"]] = c * views
    s[:, COL["topk"]] = views
    s[:, COL["n_can"]] = 1
    s[:, COL["top1_can"]] = 1
    s[:, COL["n_off"]] = views - 1
    s[:, COL["top1_off"]] = c * (views - 1)
    s[:, COL["all_top1"]] = c
    s[:, COL["one"]] = 1
    s[:, COL["consistency"]] = 0.5 + 0.4 * c
    return s


def test_resample_weights_draw_n_objects_each():
    w = resample_weights(7, 50, seed=3)
    assert w.shape == (50, 7) and np.all(w.sum(axis=1) == 7)
    assert np.array_equal(w, resample_weights(7, 50, seed=3))


def test_intervals_contain_point_and_shrink_with_more_objects():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 320):
        a = rng.random(n) < 0.5
        b = a | (rng.random(n) < 0.3)  # b fixes some of a's failures: a paired gain
        out = paired_bootstrap({"a": _stats(a), "b": _stats(b)}, n_resamples=400, seed=1)
        for model in ("a", "b"):
            for metric, r in out["models"][model].items():
                if np.isfinite(r["value"]):
                    assert r["lo"] - 1e-12 <= r["value"] <= r["hi"] + 1e-12, (n, model, metric, r)
        d = out["diffs"]["b-a"]["worst_view_acc"]
        assert d["value"] == b.mean() - a.mean()
        assert d["lo"] <= d["value"] <= d["hi"]
        widths.append(out["models"]["a"]["mean_acc"]["hi"] - out["models"]["a"]["mean_acc"]["lo"])
    assert widths[1] < widths[0] / 2  # 16x the objects: about 1/4 the width


def test_paired_difference_is_tighter_than_unpaired_spread():
    # b equals a except on 3 objects: the paired interval of b-a is narrow although each model's is wide.
    rng = np.random.default_rng(1)
    a = rng.random(60) < 0.5
    b = a.copy()
    b[np.flatnonzero(~a)[:3]] = True
    out = paired_bootstrap({"a": _stats(a), "b": _stats(b)}, n_resamples=500, seed=2)
    d = out["diffs"]["b-a"]["mean_acc"]
    single = out["models"]["a"]["mean_acc"]
    assert d["lo"] >= 0.0  # b never loses to a on any object
    assert (d["hi"] - d["lo"]) < (single["hi"] - single["lo"]) / 2

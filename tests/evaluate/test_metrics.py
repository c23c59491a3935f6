import numpy as np
import pytest

from ovt.evaluate.metrics import (
    ViewResults,
    accuracy_grid,
    azimuth_bin,
    consistency_per_object,
    elevation_band,
    km_median,
    object_stats,
    point_metrics,
    true_margin,
)


def _onehot_logits(preds, n_classes=3):
    logits = np.zeros((len(preds), n_classes))
    logits[np.arange(len(preds)), preds] = 5.0
    return logits


def _results(preds, targets, objects, canonical, elevation=None, azimuth=None, emb=None, logits=None):
    n = len(preds)
    return ViewResults(
        object_index=np.asarray(objects),
        target=np.asarray(targets),
        logits=_onehot_logits(preds) if logits is None else logits,
        embeddings=np.eye(4)[np.zeros(n, int)] if emb is None else emb,
        elevation=np.zeros(n) if elevation is None else np.asarray(elevation, float),
        azimuth=np.zeros(n) if azimuth is None else np.asarray(azimuth, float),
        canonical=np.asarray(canonical, bool),
        top_k=2,
    )


def test_mean_worst_view_canonical_gap_on_hand_made_predictions():
    # object 0 (class 0): 3 views, all correct; object 1 (class 1): canonical correct, 1 of 2 off-canonical wrong;
    # object 2 (class 2): canonical wrong, off-canonical right.
    preds = [0, 0, 0, 1, 1, 0, 1, 2, 2]
    targets = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    objects = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    canonical = [1, 0, 0, 1, 0, 0, 1, 0, 0]
    m = point_metrics(object_stats(_results(preds, targets, objects, canonical)))
    assert m["mean_acc"] == pytest.approx(7 / 9)
    assert m["worst_view_acc"] == pytest.approx(1 / 3)  # only object 0 has every view right
    assert m["canonical_acc"] == pytest.approx(2 / 3)
    assert m["off_canonical_acc"] == pytest.approx(5 / 6)
    assert m["canonical_gap"] == pytest.approx(2 / 3 - 5 / 6)
    assert np.isnan(m["search_worst_margin"]) and np.isnan(m["search_median_renders"])  # no search was run


def test_topk_counts_second_choice():
    # true class is the runner-up on every view: top-1 0 %, top-2 100 %.
    logits = np.array([[3.0, 2.0, 0.0], [0.0, 3.0, 2.0]])
    res = _results([0, 1], [1, 2], [0, 1], [1, 1], logits=logits)
    m = point_metrics(object_stats(res))
    assert m["mean_acc"] == 0.0 and m["topk_acc"] == 1.0


def test_band_and_search_columns():
    preds = [0, 1, 0, 1]
    targets = [0, 0, 1, 1]
    objects = [0, 0, 1, 1]
    elevation = [10, 60, 10, 70]
    res = _results(preds, targets, objects, [1, 0, 1, 0], elevation=elevation)
    # object 0: the search found margin -0.2 at render 3; object 1: not searched
    s = object_stats(res, bands=[(45, 90)], search=np.array([[-0.2, 3, 1], [np.nan, np.nan, np.nan]]))
    m = point_metrics(s)
    assert m["band_acc"] == pytest.approx(0.5)  # views at 60 (wrong) and 70 (right)
    assert m["band_worst_acc"] == pytest.approx(0.5)  # object 1 right on all its band views
    # one-hot logits of 5: a right view has margin +5/100, a wrong one -5/100; both objects have a wrong view
    assert m["worst_view_margin"] == pytest.approx(-0.05)
    assert m["search_worst_margin"] == pytest.approx(-0.2) and m["search_fooled_rate"] == 1.0
    assert m["search_median_renders"] == 3.0
    # a search weaker than the grid still reports the grid's worst margin
    weak = point_metrics(object_stats(res, search=np.array([[0.3, 8, 0], [0.3, 8, 0]])))
    assert weak["search_worst_margin"] == pytest.approx(-0.05) and weak["search_fooled_rate"] == 0.0
    assert weak["search_median_renders"] == 9.0  # never reached within the budget: budget + 1


def test_true_margin_sign_matches_correctness():
    logits = np.array([[3.0, 1.0, 0.0], [1.0, 2.5, 0.0], [0.0, 0.0, 4.0]])
    assert true_margin(logits, np.array([0, 0, 2])).tolist() == [2.0, -1.5, 4.0]


def test_kaplan_meier_median_with_censoring_and_weights():
    # events at 1, 2; censored at 4, 4 (budget 4): S(1)=3/4, S(2)=3/4*2/3=1/2 -> median 2
    time, event = np.array([1, 2, 4, 4]), np.array([1, 1, 0, 0])
    assert km_median(time, event, np.ones((1, 4)))[0] == 2.0
    # censoring is not failure: dropping the censored objects' weight changes the answer to 1 event of 2 at t=1
    assert km_median(time, event, np.array([[1.0, 1.0, 0.0, 0.0]]))[0] == 1.0
    # resample weights: the second object drawn 3 times -> S(1)=5/6, S(2)=5/6*2/5=1/3 -> 2
    w = np.array([[1.0, 3.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    out = km_median(time, event, w)
    assert out[0] == 2.0 and out[1] == 5.0  # only censored objects: not reached, budget + 1
    assert np.isnan(km_median(np.array([], int), np.array([], bool), np.ones((1, 0)))).all()


def test_consistency_is_one_for_identical_views_and_lower_for_spread_views():
    same = np.tile([[1.0, 0.0]], (3, 1))
    spread = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    cons = consistency_per_object(np.vstack([same, spread]), np.array([0, 0, 0, 1, 1, 1]), 2)
    assert cons[0] == pytest.approx(1.0)
    # centre of the spread object is (0, 1): cosines 0, 1, 0
    assert cons[1] == pytest.approx(1 / 3)


def test_bins_and_accuracy_grid():
    assert list(azimuth_bin([0, 22, 23, -23, 180, 359], 8)) == [0, 0, 1, 7, 4, 0]
    edges = [-90, -15, 20, 90]
    assert list(elevation_band([-90, -15, 10, 20, 90], edges)) == [0, 1, 1, 2, 2]
    acc, counts = accuracy_grid(np.array([1, 0, 1]), np.array([10, 10, 60]), np.array([0, 0, 90]), edges, 4)
    assert counts.sum() == 3 and counts[1, 0] == 2
    assert acc[1, 0] == 0.5 and acc[2, 1] == 1.0 and np.isnan(acc[0, 0])


def test_mismatched_rows_are_rejected():
    with pytest.raises(ValueError, match="canonical"):
        ViewResults(
            np.zeros(2, int),
            np.zeros(2, int),
            np.zeros((2, 3)),
            np.zeros((2, 4)),
            np.zeros(2),
            np.zeros(2),
            np.zeros(3, bool),
        )

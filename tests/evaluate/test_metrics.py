import numpy as np
import pytest

from ovt.evaluate.metrics import (ViewResults, accuracy_grid, azimuth_bin, consistency_per_object, elevation_band,
                                  object_stats, point_metrics)


def _onehot_logits(preds, n_classes=3):
    logits = np.zeros((len(preds), n_classes))
    logits[np.arange(len(preds)), preds] = 5.0
    return logits


def _results(preds, targets, objects, canonical, elevation=None, azimuth=None, emb=None, logits=None):
    n = len(preds)
    return ViewResults(
        object_index=np.asarray(objects), target=np.asarray(targets),
        logits=_onehot_logits(preds) if logits is None else logits,
        embeddings=np.eye(4)[np.zeros(n, int)] if emb is None else emb,
        elevation=np.zeros(n) if elevation is None else np.asarray(elevation, float),
        azimuth=np.zeros(n) if azimuth is None else np.asarray(azimuth, float),
        canonical=np.asarray(canonical, bool), top_k=2)


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
    assert np.isnan(m["adversarial_acc"])  # no search was run


def test_topk_counts_second_choice():
    # true class is the runner-up on every view: top-1 0 %, top-2 100 %.
    logits = np.array([[3.0, 2.0, 0.0], [0.0, 3.0, 2.0]])
    res = _results([0, 1], [1, 2], [0, 1], [1, 1], logits=logits)
    m = point_metrics(object_stats(res))
    assert m["mean_acc"] == 0.0 and m["topk_acc"] == 1.0


def test_heldout_bands_and_adversarial_columns():
    preds = [0, 1, 0, 1]
    targets = [0, 0, 1, 1]
    objects = [0, 0, 1, 1]
    elevation = [10, 60, 10, 70]
    s = object_stats(_results(preds, targets, objects, [1, 0, 1, 0], elevation=elevation),
                     heldout_bands=[(45, 90)], adversarial_correct=np.array([0.0, np.nan]))
    m = point_metrics(s)
    assert m["heldout_view_acc"] == pytest.approx(0.5)        # views at 60 (wrong) and 70 (right)
    assert m["heldout_view_worst_acc"] == pytest.approx(0.5)  # object 1 right on all its band views
    assert m["adversarial_acc"] == 0.0                         # only object 0 searched, and it fell


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
        ViewResults(np.zeros(2, int), np.zeros(2, int), np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2),
                    np.zeros(2), np.zeros(3, bool))

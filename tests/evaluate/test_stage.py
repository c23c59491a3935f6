import csv
import json

import numpy as np
import pytest

from ovt.evaluate.config import AdversarialParams, BenchmarkFolder, BootstrapParams, EvaluateParams
from ovt.evaluate.models import discover
from ovt.evaluate.report import flatten
from ovt.evaluate.stage import run

from .fixtures import make_renders, save_tiny_models, toy_render_view
from .test_folders import make_fixture

CFG = EvaluateParams(batch_size=8, bootstrap=BootstrapParams(n_resamples=50), summary="plain", gallery_size=3,
                     wise_alphas=[0.5], elevation_edges=[-90.0, 0.0, 45.0, 90.0], azimuth_bins=4,
                     adversarial=AdversarialParams(budget=6, n_random=3, population=3, max_objects=2,
                                                   gallery_size=2))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    renders, assets = make_renders(root)
    save_tiny_models(root / "models")
    return root, renders, assets


def test_discover_orders_base_variants_and_wise_points(world):
    root, *_ = world
    specs = discover(root / "models", base_name="base", variants=None, wise_alphas=[0.5], wise_variants=["ovt"])
    assert [(s.name, s.path.name, s.adapter_scale) for s in specs] == [
        ("base", "contrastive", 0.0), ("contrastive", "contrastive", None), ("ovt", "ovt", None),
        ("ovt_wise050", "ovt", 0.5)]
    with pytest.raises(FileNotFoundError, match="nope"):
        discover(root / "models", base_name="base", variants=["nope"], wise_alphas=[], wise_variants=[])


@pytest.mark.slow
def test_stage_end_to_end_on_tiny_models(world):
    root, renders, assets = world
    out = root / "eval"
    stats = run(CFG, seed=0, renders_dir=renders, assets_dir=assets, models_dir=root / "models", out_dir=out,
                render_view=toy_render_view, progress=False)
    assert stats["models"] == ["base", "contrastive", "ovt", "ovt_wise050"]
    assert stats["n_objects"] == 6 and stats["n_views"] == 36 and stats["adversarial_search"]
    m = flatten(json.loads((out / "metrics.json").read_text()))

    # metrics.json agrees with the per-view predictions it was computed from
    with open(out / "per_view.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 36
    for name in stats["models"]:
        correct = np.array([r[f"{name}.pred"] == r["label"] for r in rows])
        assert m[f"{name}.mean_acc"] == pytest.approx(correct.mean(), abs=1e-6)
        by_obj = {}
        for r, c in zip(rows, correct):
            by_obj.setdefault(r["asset_id"], []).append(c)
        assert m[f"{name}.worst_view_acc"] == pytest.approx(np.mean([all(v) for v in by_obj.values()]), abs=1e-6)
        assert m[f"{name}.mean_acc_lo"] <= m[f"{name}.mean_acc"] <= m[f"{name}.mean_acc_hi"]
        assert 0.0 <= m[f"{name}.consistency"] <= 1.0 + 1e-6
        # the search starts from the hardest rendered view, so it is never weaker than the view grid
        assert m[f"{name}.adversarial_acc"] is not None
    # differences are reported for every pair, later minus earlier
    assert m["ovt-base.mean_acc"] == pytest.approx(m["ovt.mean_acc"] - m["base.mean_acc"], abs=1e-5)
    assert "ovt-contrastive.worst_view_acc_lo" in m and "ovt_wise050-ovt.consistency" in m
    # base = a variant with adapters off: its scores differ from that variant's trained scores
    pv = {r["key"]: r for r in rows}
    assert any(r["base.p_true"] != r["contrastive.p_true"] for r in pv.values())

    for f in ("plots/acc_by_view.csv", "plots/acc_by_elevation.csv", "plots/acc_by_azimuth.csv",
              "plots/metrics_ci.csv", "figures/acc_heatmap.png", "figures/worst_views_ovt.png",
              "figures/adversarial_views_base.png", "adversarial.jsonl", "bootstrap.json"):
        assert (out / f).is_file(), f
    attacks = [json.loads(l) for l in (out / "adversarial.jsonl").read_text().splitlines()]
    assert len(attacks) == 4 * 2 and all(a["n_evals"] <= 6 for a in attacks)
    with open(out / "plots/acc_by_elevation.csv") as fh:
        elev = list(csv.DictReader(fh))
    assert [float(r["elevation"]) for r in elev] == [10.0, 60.0] and "ovt" in elev[0]

    # a rerun with the same inputs does nothing; a changed param reuses the per-model cache
    again = run(CFG, seed=0, renders_dir=renders, assets_dir=assets, models_dir=root / "models", out_dir=out,
                render_view=toy_render_view, progress=False)
    assert again["skipped"] and again["key"] == stats["key"]
    cfg2 = CFG.model_copy(update={"bootstrap": BootstrapParams(n_resamples=60)})
    third = run(cfg2, seed=0, renders_dir=renders, assets_dir=assets, models_dir=root / "models", out_dir=out,
                render_view=toy_render_view, progress=False)
    assert not third.get("skipped") and third["key"] != stats["key"]
    m3 = flatten(json.loads((out / "metrics.json").read_text()))
    assert m3["ovt.mean_acc"] == m["ovt.mean_acc"]


def test_broken_variant_is_logged_and_the_rest_scored(world, tmp_path):
    root, renders, assets = world
    import shutil

    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    (models / "broken").mkdir()
    (models / "broken" / "model.json").write_text("{\"format\": 999}")
    spec = make_fixture(tmp_path / "bench")  # a paper-layout benchmark folder, scored for every model too
    bench = BenchmarkFolder(name="toy", folder=spec.folder, vocabulary=spec.vocabulary, gt=spec.gt)
    cfg = CFG.model_copy(update={"adversarial": AdversarialParams(enabled=False), "wise_alphas": [],
                                 "benchmarks": [bench]})
    stats = run(cfg, seed=1, renders_dir=renders, assets_dir=assets, models_dir=models, out_dir=tmp_path / "eval",
                progress=False)
    assert stats["models"] == ["base", "contrastive", "ovt"] and stats["failures"] == 1
    fail = json.loads((tmp_path / "eval" / "failures.jsonl").read_text())
    assert fail["stage"] == "evaluate" and fail["error"] == "model_failed" and fail["item"]["model"] == "broken"
    m = flatten(json.loads((tmp_path / "eval" / "metrics.json").read_text()))
    for name in stats["models"]:
        assert 0.0 <= m[f"{name}.bench.toy.top1"] <= m[f"{name}.bench.toy.top5"] <= 1.0


def test_heldout_viewpoint_variants_are_scored_in_the_same_run(world, tmp_path):
    root, renders, assets = world
    cfg = CFG.model_copy(update={"adversarial": AdversarialParams(enabled=False), "wise_alphas": [],
                                 "heldout_elevation_bands": [(45.0, 90.0)]})
    stats = run(cfg, seed=0, renders_dir=renders, assets_dir=assets, models_dir=root / "models",
                hv_models_dir=root / "models", out_dir=tmp_path / "eval", progress=False)
    assert stats["models"] == ["base", "contrastive", "ovt", "contrastive_hv", "ovt_hv"]
    m = flatten(json.loads((tmp_path / "eval" / "metrics.json").read_text()))
    # same weights in both folders: the protocol's numbers match the plain variants exactly
    assert m["ovt_hv.heldout_view_acc"] == m["ovt.heldout_view_acc"]
    assert m["ovt_hv-contrastive_hv.heldout_view_acc"] == pytest.approx(
        m["ovt.heldout_view_acc"] - m["contrastive.heldout_view_acc"], abs=1e-6)
    assert m["ovt.adversarial_acc"] is None  # search disabled: undefined, not zero

import csv
import json

import numpy as np
import pytest

from ovt.evaluate.config import BenchmarkFolder, EvaluateParams, IntervalParams, SearchParams
from ovt.evaluate.embeddings import IMAGES, POOLED, PREFIX, embed_views
from ovt.evaluate.models import ModelSpec, default_loader, discover, load
from ovt.evaluate.report import flatten
from ovt.evaluate.stage import EvaluatePaths, run
from ovt.evaluate.views import load_views

from .fixtures import make_features, make_renders, save_tiny_models, toy_render_view
from .test_folders import make_fixture

BUDGET = 6
CFG = EvaluateParams(
    batch_size=8,
    intervals=IntervalParams(n_resamples=50),
    summary="plain",
    gallery_size=3,
    wise_alphas=[0.5],
    elevation_edges=[-90.0, 0.0, 45.0, 90.0],
    azimuth_bins=4,
    search=SearchParams(
        budget=BUDGET, n_random=3, population=3, max_objects=3, gallery_size=2, models=["base", "contrastive", "ovt"]
    ),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    renders, assets = make_renders(root)
    save_tiny_models(root / "models")
    make_features(renders, root / "features")  # float16, as the default features stage stores them
    return root, renders, assets


def _paths(root, renders, assets, out, **over):
    return EvaluatePaths(
        renders_dir=renders,
        assets_dir=assets,
        features_dir=root / "features",
        models_dir=root / "models",
        out_dir=out,
        **over,
    )


def test_store_path_embeddings_match_the_full_forward(world):
    """Tail on the stored fp16 prefix (tuned models) and projection of the stored pooled output (the base) give
    the full tower's embeddings, within fp16 rounding."""
    root, renders, assets = world
    views = load_views(renders, assets / "manifest.jsonl", max_objects=None, on_failure=print)
    for spec, route in (
        (ModelSpec("base", root / "models" / "contrastive", 0.0), POOLED),
        (ModelSpec("ovt", root / "models" / "ovt", None), PREFIX),
        (ModelSpec("ovt_wise050", root / "models" / "ovt", 0.5), PREFIX),
    ):
        model = load(spec, default_loader)
        frozen = spec.adapter_scale == 0.0
        stored, how = embed_views(
            model,
            views.rows,
            lambda: views.images,
            features_dir=root / "features",
            frozen=frozen,
            batch_size=8,
            progress=False,
        )
        full, how_full = embed_views(
            model, views.rows, lambda: views.images, features_dir=None, frozen=frozen, batch_size=8, progress=False
        )
        assert (how, how_full) == (route, IMAGES)
        assert stored.shape == full.shape == (36, model.base_info.embed_dim)
        assert np.abs(stored - full).max() < 5e-3, spec
        assert np.abs(stored - full).max() > 0 or route == POOLED  # the prefix really came from the fp16 store


def test_discover_orders_base_variants_and_wise_points(world):
    root, *_ = world
    specs = discover(root / "models", base_name="base", variants=None, wise_alphas=[0.5], wise_variants=["ovt"])
    assert [(s.name, s.path.name, s.adapter_scale) for s in specs] == [
        ("base", "contrastive", 0.0),
        ("contrastive", "contrastive", None),
        ("ovt", "ovt", None),
        ("ovt_wise050", "ovt", 0.5),
    ]
    with pytest.raises(FileNotFoundError, match="nope"):
        discover(root / "models", base_name="base", variants=["nope"], wise_alphas=[], wise_variants=[])


@pytest.mark.slow
def test_stage_end_to_end_on_tiny_models(world):
    root, renders, assets = world
    out = root / "eval"
    stats = run(CFG, seed=0, paths=_paths(root, renders, assets, out), render_view=toy_render_view, progress=False)
    assert stats["models"] == ["base", "contrastive", "ovt", "ovt_wise050"]
    assert stats["n_objects"] == 6 and stats["n_views"] == 36 and stats["search"] and stats["split"] == "test"
    assert stats["embeddings_from"] == {"base": POOLED, "contrastive": PREFIX, "ovt": PREFIX, "ovt_wise050": PREFIX}
    m = flatten(json.loads((out / "metrics.json").read_text()))

    # metrics.json agrees with the per-view predictions it was computed from
    with open(out / "per_view.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 36
    grid_worst: dict[tuple[str, str], float] = {}
    for name in stats["models"]:
        correct = np.array([r[f"{name}.pred"] == r["label"] for r in rows])
        margin = np.array([float(r[f"{name}.margin"]) for r in rows])
        assert np.array_equal(margin > 0, correct)  # a positive true-class margin is a right answer
        assert m[f"{name}.mean_acc"] == pytest.approx(correct.mean(), abs=1e-6)
        by_obj = {}
        for r, c, mg in zip(rows, correct, margin):
            by_obj.setdefault(r["asset_id"], []).append(c)
            key = (name, r["asset_id"])
            grid_worst[key] = min(grid_worst.get(key, np.inf), mg)
        assert m[f"{name}.worst_view_acc"] == pytest.approx(np.mean([all(v) for v in by_obj.values()]), abs=1e-6)
        assert m[f"{name}.worst_view_margin"] == pytest.approx(
            np.mean([grid_worst[(name, a)] for a in by_obj]), abs=1e-4
        )
        assert m[f"{name}.mean_acc_lo"] <= m[f"{name}.mean_acc"] <= m[f"{name}.mean_acc_hi"]
        assert 0.0 <= m[f"{name}.consistency"] <= 1.0 + 1e-6
    # differences are reported for every pair, later minus earlier
    assert m["ovt-base.mean_acc"] == pytest.approx(m["ovt.mean_acc"] - m["base.mean_acc"], abs=1e-5)
    assert "ovt-contrastive.search_worst_margin_lo" in m and "ovt_wise050-ovt.consistency" in m
    # base = a variant with adapters off: its scores differ from that variant's trained scores
    assert any(r["base.margin"] != r["contrastive.margin"] for r in rows)

    # the search is never weaker than the view grid: per object, its worst margin is at most the worst rendered
    # view's
    found = [json.loads(line) for line in (out / "pose_search.jsonl").read_text().splitlines()]
    assert sorted({(a["model"]) for a in found}) == ["base", "contrastive", "ovt"] and len(found) == 3 * 3
    for a in found:
        grid = grid_worst[(a["model"], a["asset_id"])]
        assert a["grid_margin"] == pytest.approx(grid, abs=1e-5)  # per_view.csv keeps 6 significant digits
        assert a["worst_margin"] <= a["grid_margin"] and 1 <= a["n_renders"] <= BUDGET
        assert a["first_error"] is None or 1 <= a["first_error"] <= a["n_renders"]
    for name in ("base", "contrastive", "ovt"):
        mine = [a for a in found if a["model"] == name]
        assert m[f"{name}.search_worst_margin"] == pytest.approx(np.mean([a["worst_margin"] for a in mine]), abs=1e-5)
        assert m[f"{name}.search_worst_margin"] <= np.mean([grid_worst[(name, a["asset_id"])] for a in mine]) + 1e-6
        assert m[f"{name}.search_fooled_rate"] == pytest.approx(
            np.mean([a["first_error"] is not None for a in mine]), abs=1e-6
        )
        assert 1 <= m[f"{name}.search_median_renders"] <= BUDGET + 1
    assert m["ovt_wise050.search_worst_margin"] is None  # not searched: undefined, not zero
    assert m["search.budget"] == BUDGET and m["search.n_objects"] == 3 and m["split"] == "test"

    for f in (
        "plots/acc_by_view.csv",
        "plots/acc_by_elevation.csv",
        "plots/acc_by_azimuth.csv",
        "plots/metrics_ci.csv",
        "figures/acc_heatmap.png",
        "figures/worst_views_ovt.png",
        "figures/search_views_base.png",
        "pose_search.jsonl",
        "intervals.json",
    ):
        assert (out / f).is_file(), f
    with open(out / "plots/acc_by_elevation.csv") as fh:
        elev = list(csv.DictReader(fh))
    assert [float(r["elevation"]) for r in elev] == [10.0, 60.0] and "ovt" in elev[0]

    # a rerun with the same inputs does nothing; a changed param reuses the per-model cache
    again = run(CFG, seed=0, paths=_paths(root, renders, assets, out), render_view=toy_render_view, progress=False)
    assert again["skipped"] and again["key"] == stats["key"]
    cfg2 = CFG.model_copy(update={"intervals": IntervalParams(n_resamples=60)})
    third = run(cfg2, seed=0, paths=_paths(root, renders, assets, out), render_view=toy_render_view, progress=False)
    assert not third.get("skipped") and third["key"] != stats["key"]
    m3 = flatten(json.loads((out / "metrics.json").read_text()))
    assert m3["ovt.mean_acc"] == m["ovt.mean_acc"]
    assert m3["ovt.search_worst_margin"] == m["ovt.search_worst_margin"]
    assert third["embeddings_from"] == stats["embeddings_from"]


def test_broken_variant_is_logged_and_the_rest_scored(world, tmp_path):
    root, renders, assets = world
    import shutil

    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    (models / "broken").mkdir()
    (models / "broken" / "model.json").write_text('{"format": 999}')
    spec = make_fixture(tmp_path / "bench")  # a paper-layout benchmark folder, scored for every model too
    bench = BenchmarkFolder(name="toy", folder=spec.folder, vocabulary=spec.vocabulary, gt=spec.gt)
    cfg = CFG.model_copy(update={"search": SearchParams(enabled=False), "wise_alphas": [], "benchmarks": [bench]})
    # no feature store at all: every model falls back to its full tower
    stats = run(
        cfg,
        seed=1,
        paths=EvaluatePaths(
            renders_dir=renders, assets_dir=assets, features_dir=None, models_dir=models, out_dir=tmp_path / "eval"
        ),
        progress=False,
    )
    assert stats["models"] == ["base", "contrastive", "ovt"] and stats["failures"] == 1
    assert set(stats["embeddings_from"].values()) == {IMAGES}
    fail = json.loads((tmp_path / "eval" / "failures.jsonl").read_text())
    assert fail["stage"] == "evaluate" and fail["error"] == "model_failed" and fail["item"]["model"] == "broken"
    m = flatten(json.loads((tmp_path / "eval" / "metrics.json").read_text()))
    for name in stats["models"]:
        assert 0.0 <= m[f"{name}.bench.toy.top1"] <= m[f"{name}.bench.toy.top5"] <= 1.0


def test_heldout_viewpoint_variants_are_scored_in_the_same_run(world, tmp_path):
    root, renders, assets = world
    cfg = CFG.model_copy(
        update={"search": SearchParams(enabled=False), "wise_alphas": [], "heldout_elevation_bands": [(45.0, 90.0)]}
    )
    stats = run(
        cfg,
        seed=0,
        paths=_paths(root, renders, assets, tmp_path / "eval", hv_models_dir=root / "models"),
        progress=False,
    )
    assert stats["models"] == ["base", "contrastive", "ovt", "contrastive_hv", "ovt_hv"]
    m = flatten(json.loads((tmp_path / "eval" / "metrics.json").read_text()))
    # same weights in both folders: the protocol's numbers match the plain variants exactly
    assert m["ovt_hv.band_acc"] == m["ovt.band_acc"]
    assert m["ovt_hv-contrastive_hv.band_acc"] == pytest.approx(m["ovt.band_acc"] - m["contrastive.band_acc"], abs=1e-6)
    # the protocol block says which band, for which models it is held out, and the gains with their intervals
    hv = {k.removeprefix("heldout_viewpoints."): v for k, v in m.items() if k.startswith("heldout_viewpoints.")}
    assert hv["band_lo"] == 45.0 and hv["band_hi"] == 90.0 and hv["held_out_for"] == "contrastive_hv,ovt_hv"
    assert hv["gain_ovt_hv_vs_contrastive_hv"] == m["ovt_hv-contrastive_hv.band_acc"]
    assert hv["gain_ovt_hv_vs_contrastive_hv_lo"] == m["ovt_hv-contrastive_hv.band_acc_lo"]
    assert hv["gain_ovt_vs_contrastive"] == m["ovt-contrastive.band_acc"]
    assert m["ovt.search_worst_margin"] is None  # search disabled: undefined, not zero


def test_validation_split_and_old_manifests(tmp_path):
    """`evaluate.split: validation` scores the validation objects; an old manifest's "heldout" is the test split."""
    renders, assets = make_renders(tmp_path / "old", n_per_class=1, test_split="heldout")
    save_tiny_models(tmp_path / "models", variants=("ovt",))
    cfg = CFG.model_copy(update={"search": SearchParams(enabled=False), "wise_alphas": []})
    paths = EvaluatePaths(
        renders_dir=renders,
        assets_dir=assets,
        features_dir=None,
        models_dir=tmp_path / "models",
        out_dir=tmp_path / "eval",
    )
    assert run(cfg, seed=0, paths=paths, progress=False)["n_objects"] == 3
    with pytest.raises(ValueError, match="no labelled validation views"):
        run(cfg.model_copy(update={"split": "validation"}), seed=0, paths=paths, progress=False)
    val, _ = make_renders(tmp_path / "new", n_per_class=1, test_split="validation")
    stats = run(
        cfg.model_copy(update={"split": "validation"}),
        seed=0,
        paths=EvaluatePaths(
            renders_dir=val,
            assets_dir=assets,
            features_dir=None,
            models_dir=tmp_path / "models",
            out_dir=tmp_path / "eval_val",
        ),
        progress=False,
    )
    assert stats["split"] == "validation" and stats["n_objects"] == 3


def test_seed_replicates_are_pooled_per_object(world, tmp_path):
    import shutil

    root, renders, assets = world
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    save_tiny_models(tmp_path / "other", variants=("a", "b", "contrastive", "ovt"))  # other weights: other seeds
    for v in ("contrastive", "ovt"):
        shutil.copytree(tmp_path / "other" / v, models / v / "seeds" / "1")
    cfg = CFG.model_copy(update={"search": SearchParams(enabled=False), "wise_alphas": []})
    plain = run(cfg, seed=0, paths=_paths(root, renders, assets, tmp_path / "plain"), progress=False)
    paths = EvaluatePaths(
        renders_dir=renders,
        assets_dir=assets,
        features_dir=root / "features",
        models_dir=models,
        out_dir=tmp_path / "eval",
    )
    stats = run(cfg, seed=0, paths=paths, progress=False)
    assert stats["models"] == [*plain["models"], "contrastive_seed1", "ovt_seed1"]
    m = flatten(json.loads((tmp_path / "eval" / "metrics.json").read_text()))
    p = flatten(json.loads((tmp_path / "plain" / "metrics.json").read_text()))
    # the registered (first-seed) models are scored exactly as without replicates
    assert all(
        m[f"{v}.{k}"] == p[f"{v}.{k}"] for v in ("base", "contrastive", "ovt") for k in ("mean_acc", "worst_view_acc")
    )
    for v in ("contrastive", "ovt"):
        for k in ("mean_acc", "worst_view_acc", "off_canonical_acc", "worst_view_margin"):
            # every object has the same views under both seeds: the pooled value is the mean of the seeds' values
            assert m[f"{v}_x2.{k}"] == pytest.approx((m[f"{v}.{k}"] + m[f"{v}_seed1.{k}"]) / 2, abs=1e-6)
            assert m[f"{v}_x2.{k}_lo"] <= m[f"{v}_x2.{k}"] <= m[f"{v}_x2.{k}_hi"]
    assert m["ovt_x2-contrastive_x2.worst_view_acc"] == pytest.approx(
        m["ovt_x2.worst_view_acc"] - m["contrastive_x2.worst_view_acc"], abs=1e-6
    )
    assert m["ovt_x2.search_worst_margin"] is None  # replicates are never searched
    with open(tmp_path / "eval" / "per_view.csv") as fh:
        header = next(csv.reader(fh))
    assert not any("seed1" in h for h in header)  # per-view tables and figures show the registered models

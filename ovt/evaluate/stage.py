"""The evaluate stage: score the base and every trained variant on one split's objects (test by default), in one run.

Inputs: data/renders (manifest + shards), data/features (the frozen tower's outputs per view), data/assets
(manifest: vocabulary, meshes for the worst-case search), models/ (saved variants). Outputs in data/eval/:
metrics.json (DVC metrics), intervals.json, plots/*.csv (DVC plots), figures/*.png, per_view.csv,
pose_search.jsonl, failures.jsonl, stats.json (with the content key).

Idempotent: a rerun whose content key (inputs, models, params, seed, implementation) matches stats.json returns
at once. Resumable: each model's scores are cached under cache/ by their own key, so a crash after two of three
models redoes only the third.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ovt.evaluate import figures, report
from ovt.evaluate.config import EvaluateParams
from ovt.evaluate.embeddings import embed_views
from ovt.evaluate.folders import BenchmarkSpec, run_benchmark_table
from ovt.evaluate.intervals import paired_bootstrap
from ovt.evaluate.metrics import ViewResults, accuracy_grid, object_stats, point_metrics
from ovt.evaluate.models import (
    ModelLoader,
    ModelSpec,
    default_loader,
    dir_digest,
    discover,
    load,
    pooled_name,
    replicates,
)
from ovt.evaluate.views import EvalViews, load_views
from ovt.evaluate.worst_case import PrefixCache, RenderView, search_model, search_table
from ovt.evaluate.zeroshot import build_classifier
from ovt.io import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    read_jsonl,
    sha256_file,
    stable_digest,
    write_jsonl_atomic,
)
from ovt.params_base import PROMPT_WORDS

log = logging.getLogger(__name__)

IMPL_VERSION = "evaluate-2"
STAGE = "evaluate"
HV_SUFFIX = "_hv"  # models trained without the elevation band(s) of `heldout_elevation_bands`
# Each seed replicate's own point values in metrics.json, so the spread over seeds is visible beside the pooled rows.
SEED_METRICS = ("mean_acc", "worst_view_acc", "off_canonical_acc", "band_acc", "worst_view_margin")


@dataclass(frozen=True)
class EvaluatePaths:
    renders_dir: Path = Path("data/renders")
    assets_dir: Path = Path("data/assets")
    features_dir: Path | None = Path("data/features")  # None: every model runs its full tower on the images
    models_dir: Path = Path("models")
    out_dir: Path = Path("data/eval")
    hv_models_dir: Path | None = None  # a second folder of *_hv variants (they normally sit in models_dir)


def _input_digest(renders_dir: Path, assets_dir: Path, features_dir: Path | None) -> dict:
    """Hashes of what defines the inputs: the manifests, the shard completion records (which carry each shard's
    content key) and the feature records (which carry theirs), named relative to their folder so the key survives
    moving the repository."""
    files = {
        f"renders/{p.relative_to(renders_dir)}": p
        for p in [renders_dir / "manifest.jsonl", *sorted((renders_dir / "shards").glob("*.json"))]
    }
    files["assets/manifest.jsonl"] = assets_dir / "manifest.jsonl"
    if features_dir is not None and features_dir.is_dir():
        files.update({f"features/{p.relative_to(features_dir)}": p for p in sorted(features_dir.glob("*/*.json"))})
    return {name: sha256_file(p) for name, p in files.items() if p.is_file()}


def _failure_logger(path: Path) -> Callable[[dict, str, str], None]:
    def on_failure(item: dict, error: str, detail: str) -> None:
        log.warning("evaluate: %s %s: %s", error, item, detail)
        append_jsonl(path, {"stage": STAGE, "item": item, "error": error, "detail": detail})

    return on_failure


def _load_cache(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None


def _save_cache(path: Path, **arrays: Any) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _results(views: EvalViews, cfg: EvaluateParams, logits: np.ndarray, emb: np.ndarray) -> ViewResults:
    return ViewResults(
        views.object_index,
        views.target,
        logits,
        emb,
        views.elevation,
        views.azimuth,
        views.canonical,
        top_k=cfg.top_k,
        logit_scale=cfg.logit_scale,
    )


def heldout_viewpoints(boot: dict, cfg: EvaluateParams, names: list[str]) -> dict[str, Any]:
    """The held-out-viewpoints protocol in one place: the band, which models never saw it, and the gains on it.

    `band_acc` is reported for every model, but the band is held out only for the *_hv variants: the all-view
    models' gain on it is shown next to theirs so a table can tell the two apart."""
    out: dict[str, Any] = {"held_out_for": ",".join(n for n in names if n.endswith(HV_SUFFIX)) or None}
    bands = cfg.heldout_elevation_bands
    for i, (lo, hi) in enumerate(bands):
        tag = "band" if len(bands) == 1 else f"band_{i}"
        out[f"{tag}_lo"], out[f"{tag}_hi"] = float(lo), float(hi)
    for a, b in (("ovt_hv", "contrastive_hv"), ("ovt", "contrastive"), ("ovt_hv", "base"), ("ovt", "base")):
        d = boot["diffs"].get(f"{a}-{b}", {}).get("band_acc")
        if d is not None:
            key = f"gain_{a}_vs_{b}"
            out[key], out[f"{key}_lo"], out[f"{key}_hi"] = d["value"], d["lo"], d["hi"]
    return out


def run(
    cfg: EvaluateParams,
    *,
    seed: int,
    paths: EvaluatePaths = EvaluatePaths(),
    model_loader: ModelLoader | None = None,
    render_view: RenderView | None = None,
    progress: bool = True,
    prompt_words: Mapping[str, str] = PROMPT_WORDS,
) -> dict:
    """Evaluate every model under `paths.models_dir` on the views of `cfg.split`; write `paths.out_dir`.

    `prompt_words` renames labels in the class prompts (params.yaml `base.prompt_words`, shared with bootstrap).

    `model_loader(dir)` defaults to `OVTModel.load`; `render_view(asset_row, azimuth, elevation, distance)`
    enables the worst-case viewpoint search (skipped, and said so in stats.json, when None).
    """
    t0 = time.perf_counter()
    renders_dir, assets_dir, models_dir, out_dir = map(
        Path, (paths.renders_dir, paths.assets_dir, paths.models_dir, paths.out_dir)
    )
    features_dir = Path(paths.features_dir) if paths.features_dir is not None else None
    loader = model_loader or default_loader
    specs = discover(
        models_dir,
        base_name=cfg.base_name,
        variants=cfg.variants,
        wise_alphas=cfg.wise_alphas,
        wise_variants=cfg.wise_variants,
    )
    if paths.hv_models_dir is not None:
        hv = discover(
            Path(paths.hv_models_dir), base_name=cfg.base_name, variants=cfg.variants, wise_alphas=[], wise_variants=[]
        )
        # the base is the same frozen model in both folders: score it once
        specs += [ModelSpec(f"{h.name}{HV_SUFFIX}", h.path, h.adapter_scale) for h in hv if h.name != cfg.base_name]
    # seed replicates of the trained variants: scored like any model, then averaged per object into `<v>_x<n>`
    reps = {s.name: r for s in specs if (r := replicates(s))}
    rep_names = {r.name for rs in reps.values() for r in rs}
    specs = specs + [r for rs in reps.values() for r in rs]
    model_digests = {s.name: [dir_digest(s.path), s.adapter_scale] for s in specs}
    search_on = cfg.search.enabled and render_view is not None
    key = stable_digest(
        {
            "impl": IMPL_VERSION,
            "seed": seed,
            "params": cfg.model_dump(mode="json"),
            "prompt_words": dict(sorted(prompt_words.items())),
            "inputs": _input_digest(renders_dir, assets_dir, features_dir),
            "models": model_digests,
            "search": search_on,
        }
    )
    stats_path = out_dir / "stats.json"
    if stats_path.is_file() and (out_dir / "metrics.json").is_file():
        done = json.loads(stats_path.read_text())
        if done.get("key") == key:
            log.info("evaluate: outputs up to date (key %s), nothing to do", key[:12])
            return {**done, "skipped": True}

    out_dir.mkdir(parents=True, exist_ok=True)
    failures = out_dir / "failures.jsonl"
    failures.unlink(missing_ok=True)  # the log describes this run only
    on_failure = _failure_logger(failures)
    views = load_views(
        renders_dir, assets_dir / "manifest.jsonl", split=cfg.split, max_objects=cfg.max_objects, on_failure=on_failure
    )
    views_key = stable_digest([r["key"] for r in views.rows] + list(views.classnames))
    features_key = _input_digest(renders_dir, assets_dir, features_dir)
    asset_rows = (
        {r["asset_id"]: r for r in read_jsonl(assets_dir / "manifest.jsonl")}
        if (assets_dir / "manifest.jsonl").is_file()
        else {}
    )
    if cfg.search.enabled and render_view is None:
        log.warning("evaluate: no renderer given: worst-case viewpoint search skipped")

    results: dict[str, ViewResults] = {}
    searched: dict[str, np.ndarray] = {}
    found_all: list[dict] = []
    routes: dict[str, str] = {}
    bench_rows: dict[str, dict] = {}
    prefix_cache = PrefixCache()
    for spec in specs:
        mkey = stable_digest(
            {
                "impl": IMPL_VERSION,
                "seed": seed,
                "model": model_digests[spec.name],
                "views": views_key,
                "features": features_key,
                "search": search_on,
                "prompt_words": dict(sorted(prompt_words.items())),
                "params": cfg.model_dump(
                    mode="json", exclude={"intervals", "summary", "mlflow_experiment", "benchmarks"}
                ),
            }
        )
        cache_path = out_dir / "cache" / f"{spec.name}.npz"
        cached = _load_cache(cache_path, mkey)
        if cached is not None and not cfg.benchmarks:
            log.info("evaluate: %s from cache", spec.name)
            results[spec.name] = _results(views, cfg, cached["logits"], cached["embeddings"])
            found = json.loads(str(cached["search"]))
            routes[spec.name] = str(cached["route"])
        else:
            try:
                model = load(spec, loader)
                classifier = build_classifier(
                    model.encode_text, views.classnames, cfg.templates, rename=prompt_words, scale=cfg.logit_scale
                )
                emb, routes[spec.name] = embed_views(
                    model,
                    views.rows,
                    lambda: views.images,
                    features_dir=features_dir,
                    frozen=spec.adapter_scale == 0.0,
                    batch_size=cfg.batch_size,
                    desc=f"score {spec.name}",
                    progress=progress,
                )
                res = _results(views, cfg, classifier.logits(torch.from_numpy(emb)).numpy(), emb)
            except Exception as err:  # a broken variant is reported and skipped; the others are still compared
                on_failure({"model": spec.name, "path": str(spec.path)}, "model_failed", f"{type(err).__name__}: {err}")
                continue
            results[spec.name] = res
            found = []
            # search_on implies a renderer; the explicit check tells the type checker
            searched_model = cfg.search.models is None or spec.name in cfg.search.models
            # the search is the costly part of a model's scoring: replicates are compared on the rendered views only
            if search_on and render_view is not None and searched_model and spec.name not in rep_names:
                found = [
                    f.record(spec.name)
                    for f in search_model(
                        model,
                        classifier,
                        views,
                        res.margin,
                        asset_rows,
                        render_view,
                        cfg.search,
                        seed=seed,
                        name=spec.name,
                        on_failure=on_failure,
                        cache=prefix_cache,
                        progress=progress,
                    )
                ]
            if cfg.benchmarks and spec.name not in rep_names:
                bench_rows[spec.name] = run_benchmark_table(
                    model,
                    [BenchmarkSpec(b.name, b.folder, b.vocabulary, b.gt) for b in cfg.benchmarks],
                    scale=cfg.logit_scale,
                    top_k=cfg.top_k,
                    batch_size=cfg.batch_size,
                    progress=progress,
                )
            _save_cache(
                cache_path,
                key=np.array(mkey),
                logits=res.logits,
                embeddings=res.embeddings,
                search=np.array(json.dumps(found)),
                route=np.array(routes[spec.name]),
            )
            del model
        if found:
            searched[spec.name] = search_table(found, views.object_ids, cfg.search.budget)
        found_all += found
    if not results:
        raise RuntimeError(f"evaluate: no model could be scored (see {failures})")

    singles = {n: r for n, r in results.items() if n not in rep_names}
    stats_by_model = {n: object_stats(r, cfg.heldout_elevation_bands, searched.get(n)) for n, r in singles.items()}
    seed_points: dict[str, Any] = {}
    for name, rs in reps.items():
        scored = [n for n in (name, *(r.name for r in rs)) if n in results]
        if name not in results or len(scored) < 2:
            continue
        # per-object counts averaged over seeds (the search columns are left out: replicates are not searched)
        per_seed = [object_stats(results[n], cfg.heldout_elevation_bands) for n in scored]
        stats_by_model[pooled_name(name, len(scored))] = np.mean(per_seed, axis=0)
        for n, st in zip(scored, per_seed):
            if n in rep_names:  # the seed-0 model's own point values are its regular metrics already
                point = point_metrics(st)
                seed_points.update({f"{n}.{m}": point[m] for m in SEED_METRICS})
    boot = paired_bootstrap(
        stats_by_model,
        n_resamples=cfg.intervals.n_resamples,
        ci=cfg.intervals.ci,
        seed=int(stable_digest([seed, "bootstrap"])[:8], 16),
    )
    extra: dict[str, Any] = {
        "split": cfg.split,
        "n_objects": len(views.object_ids),
        "n_views": len(views.rows),
        "n_classes": len(views.classnames),
    }
    if searched:
        extra.update(
            {
                "search.budget": cfg.search.budget,
                "search.n_objects": int(max(np.isfinite(t[:, 0]).sum() for t in searched.values())),
            }
        )
    extra.update(seed_points)
    for k, v in heldout_viewpoints(boot, cfg, list(singles)).items():
        extra[f"heldout_viewpoints.{k}"] = v
    for m, table in bench_rows.items():
        for bench, row in table.items():
            for k, v in row.items():
                if k in ("top1", f"top{cfg.top_k}"):
                    extra[f"{m}.bench.{bench}.{k}"] = round(float(v), 6)
    metrics = report.metrics_doc(boot, extra)
    _write_outputs(out_dir, cfg, views, singles, boot, metrics, found_all)
    _draw_figures(out_dir, cfg, views, singles, found_all, render_view, asset_rows)
    summary = report.summary_table(boot, cfg.summary)
    n_failures = len(read_jsonl(failures)) if failures.is_file() else 0
    stats = {
        "key": key,
        "impl": IMPL_VERSION,
        "split": cfg.split,
        "models": list(results),
        "n_objects": len(views.object_ids),
        "n_views": len(views.rows),
        "n_classes": len(views.classnames),
        "classes": list(views.classnames),
        "embeddings_from": routes,
        "search": search_on,
        "failures": n_failures,
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    run_id = report.log_to_mlflow(metrics, out_dir, run_id=_mlflow_run_id(specs), experiment=cfg.mlflow_experiment)
    if run_id:
        stats["mlflow_run_id"] = run_id
    atomic_write_json(stats_path, stats)  # written last: its key marks the outputs complete
    log.info("evaluate: done in %.1fs\n%s", stats["wall_s"], summary)
    return stats


def _mlflow_run_id(specs: list[ModelSpec]) -> str | None:
    """The training run to log into: MLFLOW_RUN_ID, else one recorded by the train stage in train.json."""
    import os

    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"]
    for s in specs:
        marker = s.path / "train.json"
        if marker.is_file():
            rid = json.loads(marker.read_text()).get("mlflow_run_id")
            if rid:
                return str(rid)
    return None


def _write_outputs(
    out_dir: Path,
    cfg: EvaluateParams,
    views: EvalViews,
    results: dict[str, ViewResults],
    boot: dict,
    metrics: dict,
    found: list[dict],
) -> None:
    """metrics.json, intervals.json, pose_search.jsonl, per_view.csv and the DVC plot tables."""
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_json(out_dir / "intervals.json", boot)
    write_jsonl_atomic(out_dir / "pose_search.jsonl", found)
    names = list(results)

    # per-view predictions: one row per scored view, one pred/margin column pair per model
    rows = []
    for i, r in enumerate(views.rows):
        row = {k: r[k] for k in ("key", "asset_id", "label", "view", "azimuth", "elevation", "canonical")}
        for n, res in results.items():
            row[f"{n}.pred"] = views.classnames[int(res.pred[i])]
            row[f"{n}.margin"] = float(res.margin[i])
        rows.append(row)
    report.write_csv(out_dir / "per_view.csv", rows, list(rows[0]))

    # DVC plot data: wide tables (x column + one column per model) and the long heat-map grid
    plots = out_dir / "plots"
    grids = _grids(cfg, results)
    report.write_csv(
        plots / "acc_by_view.csv",
        [g for n, (acc, cnt) in grids.items() for g in report.grid_rows(n, acc, cnt, cfg.elevation_edges)],
        ["model", "elevation_band", "elevation_mid", "azimuth_bin", "azimuth_centre", "acc", "n_views"],
    )
    elev = views.elevation
    az_bins = np.round(((views.azimuth + 180.0) % 360.0) - 180.0, 1)
    for fname, xname, xs in (
        ("acc_by_elevation.csv", "elevation", np.round(elev, 1)),
        ("acc_by_azimuth.csv", "azimuth", az_bins),
    ):
        wide = []
        for x in np.unique(xs):
            sel = xs == x
            wide.append(
                {
                    xname: float(x),
                    "n_views": int(sel.sum()),
                    **{n: float(r.correct[sel].mean()) for n, r in results.items()},
                }
            )
        report.write_csv(plots / fname, wide, [xname, "n_views", *names])
    report.write_csv(
        plots / "metrics_ci.csv",
        [{"model": n, "metric": m, **v} for n, ms in boot["models"].items() for m, v in ms.items()],
        ["model", "metric", "value", "lo", "hi"],
    )


def _grids(cfg: EvaluateParams, results: dict[str, ViewResults]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        n: accuracy_grid(r.correct, r.elevation, r.azimuth, cfg.elevation_edges, cfg.azimuth_bins)
        for n, r in results.items()
    }


def _draw_figures(
    out_dir: Path,
    cfg: EvaluateParams,
    views: EvalViews,
    results: dict[str, ViewResults],
    found: list[dict],
    render_view: RenderView | None,
    asset_rows: dict,
) -> None:
    fig_dir = out_dir / "figures"
    figures.heatmap_figure(_grids(cfg, results), cfg.elevation_edges, fig_dir / "acc_heatmap.png")
    for n, res in results.items():
        figures.worst_views_figure(
            res, views, cfg.gallery_size, f"{n}: worst rendered views", fig_dir / f"worst_views_{n}.png"
        )
        mine = [a for a in found if a["model"] == n]
        if render_view is not None and mine:
            figures.search_views_figure(
                mine,
                render_view,
                asset_rows,
                cfg.search.gallery_size,
                f"{n}: worst poses found by the search",
                fig_dir / f"search_views_{n}.png",
            )

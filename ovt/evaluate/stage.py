"""The evaluate stage: score the base and every trained variant on the held-out objects' renders, in one run.

Inputs: data/renders (manifest + shards), data/assets (manifest: vocabulary, meshes for the worst-view search),
models/ (saved variants). Outputs in data/eval/: metrics.json (flat, DVC metrics), plots/*.csv (DVC plots),
figures/*.png, per_view.csv, adversarial.jsonl, failures.jsonl, stats.json (with the content key).

Idempotent: a rerun whose content key (inputs, models, params, seed, implementation) matches stats.json returns
at once. Resumable: each model's scores are cached under cache/ by their own key, so a crash after two of three
models redoes only the third.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ovt.evaluate import report
from ovt.evaluate.bootstrap import paired_bootstrap
from ovt.evaluate.config import EvaluateParams
from ovt.evaluate.data import HeldoutViews, load_heldout_views
from ovt.evaluate.folders import BenchmarkSpec, run_benchmark_table
from ovt.evaluate.metrics import ViewResults, accuracy_grid, object_stats
from ovt.evaluate.models import ModelLoader, ModelSpec, default_loader, dir_digest, discover, load
from ovt.evaluate.scoring import score_images
from ovt.evaluate.search import RenderView, attack_model
from ovt.evaluate.zeroshot import build_classifier
from ovt.io import (append_jsonl, atomic_write_bytes, atomic_write_json, read_jsonl, sha256_file, stable_digest,
                    write_jsonl_atomic)

log = logging.getLogger(__name__)

IMPL_VERSION = "evaluate-1"
STAGE = "evaluate"
HV_SUFFIX = "_hv"  # models trained without the held-out elevation bands


def _input_digest(renders_dir: Path, assets_dir: Path) -> dict:
    """Hashes of what defines the inputs: the manifests and the shard completion records (which carry each shard's
    content key), named relative to their folder so the key survives moving the repository."""
    files = {f"renders/{p.relative_to(renders_dir)}": p
             for p in [renders_dir / "manifest.jsonl", *sorted((renders_dir / "shards").glob("*.json"))]}
    files["assets/manifest.jsonl"] = assets_dir / "manifest.jsonl"
    return {name: sha256_file(p) for name, p in files.items() if p.is_file()}


def _failure_logger(path: Path) -> Callable[[dict, str, str], None]:
    def on_failure(item: dict, error: str, detail: str) -> None:
        log.warning("evaluate: %s %s: %s", error, item, detail)
        append_jsonl(path, {"stage": STAGE, "item": item, "error": error, "detail": detail})
    return on_failure


def _score_model(spec: ModelSpec, model, cfg: EvaluateParams, views: HeldoutViews, *, progress: bool):
    classifier = build_classifier(model.encode_text, views.classnames, cfg.templates, rename=cfg.prompt_names,
                                  scale=cfg.logit_scale)
    logits, emb = score_images(model, classifier, views.images, batch_size=cfg.batch_size,
                               desc=f"score {spec.name}", progress=progress)
    res = ViewResults(views.object_index, views.target, logits, emb, views.elevation, views.azimuth,
                      views.canonical, top_k=cfg.top_k)
    return classifier, res


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


def run(cfg: EvaluateParams, *, seed: int, renders_dir: Path, assets_dir: Path, models_dir: Path, out_dir: Path,
        hv_models_dir: Path | None = None, model_loader: ModelLoader | None = None,
        render_view: RenderView | None = None, progress: bool = True) -> dict:
    """Evaluate every model under `models_dir` on the held-out views; write data/eval; return stats.

    `hv_models_dir`: variants trained without the held-out elevation bands (held-out-viewpoints protocol); they
    are scored in the same run under the names `<variant>_hv`. `model_loader(dir)` defaults to `OVTModel.load`;
    `render_view(asset_row, azimuth, elevation, distance)` enables the worst-case viewpoint search (skipped, and
    said so in stats.json, when None).
    """
    t0 = time.perf_counter()
    renders_dir, assets_dir, models_dir, out_dir = map(Path, (renders_dir, assets_dir, models_dir, out_dir))
    loader = model_loader or default_loader
    specs = discover(models_dir, base_name=cfg.base_name, variants=cfg.variants, wise_alphas=cfg.wise_alphas,
                     wise_variants=cfg.wise_variants)
    if hv_models_dir is not None:
        hv = discover(Path(hv_models_dir), base_name=cfg.base_name, variants=cfg.variants, wise_alphas=[],
                      wise_variants=[])
        # the base is the same frozen model in both folders: score it once
        specs += [ModelSpec(f"{h.name}{HV_SUFFIX}", h.path, h.adapter_scale) for h in hv
                  if h.name != cfg.base_name]
    model_digests = {s.name: [dir_digest(s.path), s.adapter_scale] for s in specs}
    search_on = cfg.adversarial.enabled and render_view is not None
    key = stable_digest({"impl": IMPL_VERSION, "seed": seed, "params": cfg.model_dump(mode="json"),
                         "inputs": _input_digest(renders_dir, assets_dir), "models": model_digests,
                         "search": search_on})
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
    views = load_heldout_views(renders_dir, assets_dir / "manifest.jsonl", max_objects=cfg.max_objects,
                               on_failure=on_failure)
    views_key = stable_digest([r["key"] for r in views.rows] + list(views.classnames))
    asset_rows = {r["asset_id"]: r for r in read_jsonl(assets_dir / "manifest.jsonl")} \
        if (assets_dir / "manifest.jsonl").is_file() else {}
    if cfg.adversarial.enabled and render_view is None:
        log.warning("evaluate: no renderer given: worst-case viewpoint search skipped")

    results: dict[str, ViewResults] = {}
    adversarial: dict[str, np.ndarray] = {}
    attacks: list[dict] = []
    bench_rows: dict[str, dict] = {}
    for spec in specs:
        mkey = stable_digest({"impl": IMPL_VERSION, "seed": seed, "model": model_digests[spec.name],
                              "views": views_key, "search": search_on,
                              "params": cfg.model_dump(mode="json", exclude={"bootstrap", "summary",
                                                                             "mlflow_experiment", "benchmarks"})})
        cache_path = out_dir / "cache" / f"{spec.name}.npz"
        cached = _load_cache(cache_path, mkey)
        if cached is not None and not cfg.benchmarks:
            log.info("evaluate: %s from cache", spec.name)
            results[spec.name] = ViewResults(views.object_index, views.target, cached["logits"],
                                             cached["embeddings"], views.elevation, views.azimuth,
                                             views.canonical, top_k=cfg.top_k)
            adversarial[spec.name] = cached["adversarial"]
            attacks += json.loads(str(cached["attacks"]))
            continue
        try:
            model = load(spec, loader)
            classifier, res = _score_model(spec, model, cfg, views, progress=progress)
        except Exception as err:  # a broken variant is reported and skipped; the others are still compared
            on_failure({"model": spec.name, "path": str(spec.path)}, "model_failed", f"{type(err).__name__}: {err}")
            continue
        results[spec.name] = res
        adv = np.full(len(views.object_ids), np.nan)
        model_attacks: list[dict] = []
        if search_on and (cfg.adversarial.models is None or spec.name in cfg.adversarial.models):
            adv, found = attack_model(model, classifier, views, res.true_prob, asset_rows, render_view,
                                      cfg.adversarial, seed=seed, name=spec.name, on_failure=on_failure,
                                      progress=progress)
            model_attacks = [a.record(spec.name) for a in found]
        adversarial[spec.name] = adv
        attacks += model_attacks
        if cfg.benchmarks:
            bench_rows[spec.name] = run_benchmark_table(
                model, [BenchmarkSpec(b.name, b.folder, b.vocabulary, b.gt) for b in cfg.benchmarks],
                scale=cfg.logit_scale, top_k=cfg.top_k, batch_size=cfg.batch_size, progress=progress)
        _save_cache(cache_path, key=np.array(mkey), logits=res.logits, embeddings=res.embeddings, adversarial=adv,
                    attacks=np.array(json.dumps(model_attacks)))
        del model
    if not results:
        raise RuntimeError(f"evaluate: no model could be scored (see {failures})")

    stats_by_model = {n: object_stats(r, cfg.heldout_elevation_bands, adversarial.get(n))
                      for n, r in results.items()}
    boot = paired_bootstrap(stats_by_model, n_resamples=cfg.bootstrap.n_resamples, ci=cfg.bootstrap.ci,
                            seed=int(stable_digest([seed, "bootstrap"])[:8], 16))
    extra: dict[str, Any] = {"n_objects": len(views.object_ids), "n_views": len(views.rows),
                             "n_classes": len(views.classnames)}
    for m, table in bench_rows.items():
        for bench, row in table.items():
            for k, v in row.items():
                if k in ("top1", f"top{cfg.top_k}"):
                    extra[f"{m}.bench.{bench}.{k}"] = round(float(v), 6)
    metrics = report.metrics_doc(boot, extra)
    _write_outputs(out_dir, cfg, views, results, boot, metrics, attacks, render_view, asset_rows)
    table = report.summary_table(boot, cfg.summary)
    n_failures = len(read_jsonl(failures)) if failures.is_file() else 0
    stats = {"key": key, "impl": IMPL_VERSION, "models": list(results), "n_objects": len(views.object_ids),
             "n_views": len(views.rows), "n_classes": len(views.classnames), "classes": list(views.classnames),
             "adversarial_search": search_on, "failures": n_failures,
             "wall_s": round(time.perf_counter() - t0, 2)}
    run_id = report.log_to_mlflow(metrics, out_dir, run_id=_mlflow_run_id(specs),
                                  experiment=cfg.mlflow_experiment)
    if run_id:
        stats["mlflow_run_id"] = run_id
    atomic_write_json(stats_path, stats)  # written last: its key marks the outputs complete
    log.info("evaluate: done in %.1fs\n%s", stats["wall_s"], table)
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


def _write_outputs(out_dir: Path, cfg: EvaluateParams, views: HeldoutViews, results: dict[str, ViewResults],
                   boot: dict, metrics: dict, attacks: list[dict], render_view: RenderView | None,
                   asset_rows: dict) -> None:
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_json(out_dir / "bootstrap.json", boot)
    write_jsonl_atomic(out_dir / "adversarial.jsonl", attacks)
    names = list(results)

    # per-view predictions: one row per held-out view, one pred/p_true column pair per model
    rows = []
    for i, r in enumerate(views.rows):
        row = {k: r[k] for k in ("key", "asset_id", "label", "view", "azimuth", "elevation", "canonical")}
        for n, res in results.items():
            row[f"{n}.pred"] = views.classnames[int(res.pred[i])]
            row[f"{n}.p_true"] = float(res.true_prob[i])
        rows.append(row)
    report.write_csv(out_dir / "per_view.csv", rows, list(rows[0]))

    # DVC plot data: wide tables (x column + one column per model) and the long heat-map grid
    plots = out_dir / "plots"
    grids = {n: accuracy_grid(r.correct, r.elevation, r.azimuth, cfg.elevation_edges, cfg.azimuth_bins)
             for n, r in results.items()}
    report.write_csv(plots / "acc_by_view.csv",
                     [g for n, (acc, cnt) in grids.items() for g in report.grid_rows(n, acc, cnt,
                                                                                      cfg.elevation_edges)],
                     ["model", "elevation_band", "elevation_mid", "azimuth_bin", "azimuth_centre", "acc", "n_views"])
    elev = views.elevation
    az_bins = np.round(((views.azimuth + 180.0) % 360.0) - 180.0, 1)
    for fname, xname, xs in (("acc_by_elevation.csv", "elevation", np.round(elev, 1)),
                             ("acc_by_azimuth.csv", "azimuth", az_bins)):
        wide = []
        for x in np.unique(xs):
            sel = xs == x
            wide.append({xname: float(x), "n_views": int(sel.sum()),
                         **{n: float(r.correct[sel].mean()) for n, r in results.items()}})
        report.write_csv(plots / fname, wide, [xname, "n_views", *names])
    report.write_csv(plots / "metrics_ci.csv",
                     [{"model": n, "metric": m, **v} for n, ms in boot["models"].items() for m, v in ms.items()],
                     ["model", "metric", "value", "lo", "hi"])

    figures = out_dir / "figures"
    report.heatmap_figure(grids, cfg.elevation_edges, figures / "acc_heatmap.png")
    for n, res in results.items():  # the worst held-out views per model, one per object
        p_true, pred = res.true_prob, res.pred
        order = np.argsort(p_true)
        seen: set[int] = set()
        items = []
        for i in order:
            o = int(views.object_index[i])
            if o in seen:
                continue
            seen.add(o)
            r = views.rows[i]
            items.append((views.images[i], f"{r['label']} -> {views.classnames[int(pred[i])]}\n"
                                           f"az {r['azimuth']:.0f} el {r['elevation']:.0f} p={p_true[i]:.2f}"))
            if len(items) >= cfg.gallery_size:
                break
        report.gallery_figure(items, f"{n}: worst held-out views", figures / f"worst_views_{n}.png")
    if render_view is not None and attacks:
        from ovt.shards import to_rgb

        for n in names:
            found = sorted((a for a in attacks if a["model"] == n), key=lambda a: a["best_prob"])
            items = []
            for a in found[: cfg.adversarial.gallery_size]:
                az, el, d = a["best_pose"]
                try:
                    img = to_rgb(render_view(asset_rows[a["asset_id"]], az, el, d))
                except Exception as err:  # a figure is not worth failing the stage for
                    log.warning("evaluate: gallery render failed for %s: %s", a["asset_id"], err)
                    continue
                items.append((img, f"{a['label']} p={a['best_prob']:.2f}\naz {az:.0f} el {el:.0f} d {d:.2f}"))
            report.gallery_figure(items, f"{n}: worst viewpoints found by search",
                                  figures / f"adversarial_views_{n}.png")

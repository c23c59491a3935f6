"""Cost of the evaluate stage's parts on this machine: scoring (full tower vs tail on a stored prefix), intervals,
and the worst-case viewpoint search at the default `evaluate.search` params.

    python benchmarks/bench_eval.py [--arch embedded|tiny-test] [--images 64] [--objects 4]

Prints the numbers and writes benchmarks/results/bench_eval.json. The models are built through ovt.model with
untrained adapters (the cost does not depend on the weights' values): the base (adapters off) and two tuned
variants sharing its frozen tower, as in the default run. The search renders procedural meshes with the real GL
renderer; its cost per object is measured on `--objects` objects and scaled to `evaluate.search.max_objects`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import trimesh
from PIL import Image

from benchmarks.common import write_result
from ovt.config import load_params
from ovt.evaluate.intervals import paired_bootstrap
from ovt.evaluate.metrics import COLUMNS
from ovt.evaluate.scoring import embed_images
from ovt.evaluate.views import EvalViews
from ovt.evaluate.worst_case import PrefixCache, search_model
from ovt.evaluate.zeroshot import build_classifier

RESULTS = Path(__file__).parent / "results" / "bench_eval.json"


def build_models(model_cfg, n: int) -> list:
    """The base (every adapter off) and n - 1 tuned variants on one frozen tower."""
    from ovt.model import build_base, build_ovt_model

    models = [build_ovt_model(model_cfg, build_base(model_cfg, None)).eval() for _ in range(n)]
    models[0].set_adapter_scale(0.0)
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=None, help="model arch (default: params.yaml model.arch)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--objects", type=int, default=4, help="objects searched for the per-object cost")
    args = ap.parse_args()
    p = load_params()
    model_cfg = p.model if args.arch is None else p.model.model_copy(update={"arch": args.arch})
    search = p.evaluate.search
    n_models = len(search.models) if search.models else 3
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    out: dict = {"arch": model_cfg.arch}

    t = time.perf_counter()
    models = build_models(model_cfg, n_models)
    out["model_build_s"] = round((time.perf_counter() - t) / n_models, 2)
    model = models[1]
    classes = ["chair", "table", "lamp", "sofa", "bed", "door", "window", "plant"]
    t = time.perf_counter()
    clf = build_classifier(model.encode_text, classes, p.evaluate.templates, rename=p.base.prompt_words)
    out["classifier_s"] = round(time.perf_counter() - t, 3)

    # scoring: the full tower (the fallback) against the tail on a stored prefix (what evaluate does per model)
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (192, 192, 3), dtype=np.uint8)) for _ in range(args.images)]
    embed_images(model, imgs[:8], batch_size=8, progress=False)  # warm-up
    t = time.perf_counter()
    embed_images(model, imgs, batch_size=args.batch, progress=False)
    full = time.perf_counter() - t
    with torch.no_grad():
        prefix = model.image_prefix(torch.stack([model.preprocess(im) for im in imgs]))
        t = time.perf_counter()
        for i in range(0, len(prefix), args.batch):
            model.image_tail(prefix[i : i + args.batch])
        tail = time.perf_counter() - t
    out["full_tower_ms_per_image"] = round(1000 * full / args.images, 2)
    out["tail_on_prefix_ms_per_image"] = round(1000 * tail / args.images, 2)

    # intervals: 66 objects (the embedded default's test set), 5 models, 1000 resamples
    stats = {f"m{i}": np.abs(rng.normal(size=(66, len(COLUMNS)))) + 1 for i in range(5)}
    t = time.perf_counter()
    paired_bootstrap(stats, n_resamples=1000, seed=0)
    out["intervals_66obj_5models_1000_s"] = round(time.perf_counter() - t, 3)

    # worst-case search at the default params, with the real GL renderer on procedural meshes
    from ovt.evaluate.renderer import GLViewRenderer

    with tempfile.TemporaryDirectory() as tmp:
        rows, vrows = {}, []
        for o in range(args.objects):
            mesh = trimesh.creation.box(extents=(2.0, 1.0 + o, 0.3))
            mesh.export(Path(tmp) / f"m{o}.obj")
            aid = f"{o:064x}"
            rows[aid] = {"asset_id": aid, "mesh": f"m{o}.obj", "rotation": None, "label": "table"}
            vrows.append(
                {
                    "key": f"{aid}_000",
                    "asset_id": aid,
                    "azimuth": 0.0,
                    "elevation": 10.0,
                    "distance": 3.0,
                    "canonical": True,
                    "label": "table",
                }
            )
        renderer = GLViewRenderer(p.render, Path(tmp), seed=0)
        t = time.perf_counter()
        for _ in range(20):
            renderer(rows[vrows[0]["asset_id"]], 30.0, 20.0, 3.2)
        out["gl_render_ms_per_view"] = round(1000 * (time.perf_counter() - t) / 20, 2)
        views = EvalViews(vrows, [], tuple(classes), tuple(rows), np.arange(args.objects), np.ones(args.objects, int))
        cache = PrefixCache()
        t = time.perf_counter()
        for i, m in enumerate(models):
            search_model(
                m,
                clf,
                views,
                np.full(args.objects, 0.05),
                rows,
                renderer,
                search.model_copy(update={"max_objects": None}),
                seed=0,
                name=f"m{i}",
                on_failure=lambda *a: print("failure", a),
                cache=cache,
                progress=False,
            )
        dt = time.perf_counter() - t
        renderer.close()
    per_obj = dt / args.objects
    n_default = search.max_objects or 66
    out.update(
        {
            "search_budget": search.budget,
            "search_n_random": search.n_random,
            "search_models": n_models,
            "search_prefixes_per_object": round(len(cache) / args.objects, 1),
            "search_s_per_object_all_models": round(per_obj, 2),
            "search_default_objects": n_default,
            "search_default_s": round(per_obj * n_default, 1),
            # the same cost in full-tower image passes measured in this run: comparable across machine loads
            "search_default_in_full_tower_passes": round(per_obj * n_default / (full / args.images)),
        }
    )
    for k, v in write_result(RESULTS, out, load_before=load_before, echo=False).items():
        print(f"{k:36s} {v}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

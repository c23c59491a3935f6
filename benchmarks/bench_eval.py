"""Cost of the evaluate stage's parts on this machine: scoring throughput, bootstrap, worst-view search.

    python benchmarks/bench_eval.py [--arch embedded|tiny-test] [--images 128] [--objects 2] [--budget 48]

Prints the numbers and writes benchmarks/results/bench_eval.json. The model is built through ovt.model with its
untrained projections (the cost does not depend on the weights' values); the search renders a procedural mesh
with the real GL renderer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import trimesh
from PIL import Image

from ovt.evaluate.bootstrap import paired_bootstrap
from ovt.evaluate.config import AdversarialParams, EvaluateParams
from ovt.evaluate.data import HeldoutViews
from ovt.evaluate.metrics import COLUMNS
from ovt.evaluate.scoring import score_images
from ovt.evaluate.search import attack_model
from ovt.evaluate.zeroshot import build_classifier
from ovt.io import atomic_write_json

RESULTS = Path(__file__).parent / "results" / "bench_eval.json"


def build_model(arch: str):
    from ovt.model import ModelParams, VIFormerParams, build_base, build_ovt_model

    cfg = ModelParams(arch=arch) if arch != "tiny-test" else ModelParams(
        arch=arch, lora={"placement": "qkv", "last_blocks": None}, viformer=VIFormerParams(heads=4, ffn=64))
    return build_ovt_model(cfg, build_base(cfg)).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="embedded")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--budget", type=int, default=48)
    args = ap.parse_args()
    torch.manual_seed(0)
    out: dict = {"arch": args.arch, "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
                 "cpus": os.cpu_count()}

    t = time.perf_counter()
    model = build_model(args.arch)
    out["model_build_s"] = round(time.perf_counter() - t, 2)
    cfg = EvaluateParams()
    classes = ["chair", "table", "lamp", "sofa", "bed", "door", "window", "plant"]
    t = time.perf_counter()
    clf = build_classifier(model.encode_text, classes, cfg.templates, rename=cfg.prompt_names)
    out["classifier_s"] = round(time.perf_counter() - t, 3)

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (192, 192, 3), dtype=np.uint8)) for _ in range(args.images)]
    score_images(model, clf, imgs[: min(8, len(imgs))], batch_size=8, progress=False)  # warm-up
    t = time.perf_counter()
    score_images(model, clf, imgs, batch_size=args.batch, progress=False)
    dt = time.perf_counter() - t
    out["score_images_per_s"] = round(args.images / dt, 1)
    out["score_ms_per_image"] = round(1000 * dt / args.images, 2)

    # bootstrap: 66 objects (the embedded default's held-out set), 5 models, 1000 resamples
    stats = {f"m{i}": np.abs(rng.normal(size=(66, len(COLUMNS)))) + 1 for i in range(5)}
    t = time.perf_counter()
    paired_bootstrap(stats, n_resamples=1000, seed=0)
    out["bootstrap_66obj_5models_1000_s"] = round(time.perf_counter() - t, 3)

    # worst-view search with the real GL renderer on procedural meshes
    from ovt.evaluate.renderer import GLViewRenderer
    from ovt.render.config import RenderParams

    with tempfile.TemporaryDirectory() as tmp:
        rows, vrows = {}, []
        for o in range(args.objects):
            mesh = trimesh.creation.box(extents=(2.0, 1.0 + o, 0.3))
            mesh.export(Path(tmp) / f"m{o}.obj")
            aid = f"{o:064x}"
            rows[aid] = {"asset_id": aid, "mesh": f"m{o}.obj", "rotation": None, "label": "table"}
            vrows.append({"key": f"{aid}_000", "asset_id": aid, "azimuth": 0.0, "elevation": 10.0,
                          "distance": 3.0, "canonical": True, "label": "table"})
        renderer = GLViewRenderer(RenderParams(image_size=192), Path(tmp), seed=0)
        t = time.perf_counter()
        for _ in range(20):
            renderer(rows[vrows[0]["asset_id"]], 30.0, 20.0, 3.2)
        out["gl_render_ms_per_view"] = round(1000 * (time.perf_counter() - t) / 20, 2)
        views = HeldoutViews(vrows, [renderer(rows[r["asset_id"]], 0.0, 10.0, 3.0) for r in vrows],
                             tuple(classes), tuple(rows), np.arange(args.objects), np.ones(args.objects, int))
        p = AdversarialParams(budget=args.budget)
        t = time.perf_counter()
        attack_model(model, clf, views, np.full(args.objects, 0.5), rows, renderer, p, seed=0, name="bench",
                     on_failure=lambda *a: print("failure", a), progress=False)
        dt = time.perf_counter() - t
        renderer.close()
    out["search_budget"] = args.budget
    out["search_s_per_object"] = round(dt / args.objects, 2)
    out["search_ms_per_query"] = round(1000 * dt / (args.objects * args.budget), 2)
    for k, v in out.items():
        print(f"{k:36s} {v}")
    atomic_write_json(RESULTS, out)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Render benchmark: views/s of both backends on the same Sweet Home 3D objects in one run, and time per object vs
number of views. Prints the numbers and writes benchmarks/results/render.json.

    python benchmarks/bench_render.py [--objects 12] [--blender-objects 2] [--blender-views 4]

gl is measured three ways: the stage end to end (one worker lane; mesh loading, render, PNG encode, shard writing;
worker start excluded and included), and in-process render-only / render+PNG on pre-loaded meshes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from ovt.render import stage
from ovt.render.cameras import light_for_object, sample_views
from ovt.render.config import BlenderParams, RenderParams, default_blender_python
from ovt.render.gl import GLRenderer
from ovt.render.images import encode_png
from ovt.render.normalize import load_normalised

SH3F = Path("/usr/share/sweethome3d/furniture/BlendSwap-CC-0.sh3f")
OUT = Path(__file__).parent / "results" / "render.json"


def build_assets(dest: Path, n: int) -> Path:
    """Extract one .sh3f catalogue and write an acquire-style manifest for n objects spread over it."""
    with zipfile.ZipFile(SH3F) as z:
        z.extractall(dest / "store")
    props = {}
    for line in (dest / "store" / "PluginFurnitureCatalog.properties").read_text("latin-1").splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            props[k.strip()] = v.encode("latin-1").decode("unicode_escape")
    idx = sorted(int(k.split("#")[1]) for k in props if k.startswith("model#"))
    rows = []
    for i in idx[:: max(1, len(idx) // n)][:n]:
        mesh = Path("store") / props[f"model#{i}"].lstrip("/")
        rot = props.get(f"modelRotation#{i}")
        rows.append(
            {
                "asset_id": hashlib.sha256((dest / mesh).read_bytes()).hexdigest(),
                "name": props[f"name#{i}"],
                "category": props.get(f"category#{i}"),
                "mesh": mesh.as_posix(),
                "rotation": [float(x) for x in rot.split()] if rot else None,
                "split": "train",
                "label": None,
            }
        )
    rows.sort(key=lambda r: r["asset_id"])
    (dest / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dest


def bench_stage(cfg: RenderParams, assets: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    s = stage.run(cfg, seed=0, assets_dir=assets, out_dir=out, progress=False)
    wall = time.perf_counter() - t0
    return {
        "objects": s["objects_ok"],
        "views": s["views_rendered"],
        "wall_s": round(wall, 2),
        "worker_s": s["worker_seconds"],
        "views_per_s_worker": s["views_per_worker_s"],
        "views_per_s_wall": round(s["views_rendered"] / wall, 2),
    }


def bench_gl_inprocess(assets: Path, cfg: RenderParams) -> dict:
    rows = [json.loads(x) for x in (assets / "manifest.jsonl").read_text().splitlines()]
    meshes = [load_normalised(assets / r["mesh"], r["rotation"]) for r in rows]
    r = GLRenderer(cfg.image_size, cfg.msaa)
    views, light = sample_views(cfg, 0), light_for_object(cfg, 0)
    r.render(meshes[0], views[:1], light)  # shader compile / first-frame cost out of the timing
    t_render = t_png = 0.0
    n = 0
    for m in meshes:
        t0 = time.perf_counter()
        imgs = r.render(m, views, light)
        t1 = time.perf_counter()
        for im in imgs:
            encode_png(im, transparent=False, background=cfg.background, compress_level=cfg.png_compress_level)
        t_render, t_png, n = t_render + t1 - t0, t_png + time.perf_counter() - t1, n + len(imgs)
    # time per object vs number of views (one mid-size object, fibonacci views)
    faces = [m.n_faces for m in meshes]
    mid = meshes[int(np.argsort(faces)[len(faces) // 2])]
    scaling = []
    for k in (8, 16, 32, 64):
        vs = sample_views(cfg.model_copy(update={"view_sampler": "fibonacci", "n_views": k}), 0)
        t0 = time.perf_counter()
        for im in r.render(mid, vs, light):
            encode_png(im, transparent=False, background=cfg.background, compress_level=cfg.png_compress_level)
        scaling.append({"n_views": k, "seconds": round(time.perf_counter() - t0, 4)})
    r.close()
    slope, icpt = np.polyfit([s["n_views"] for s in scaling], [s["seconds"] for s in scaling], 1)
    return {
        "views": n,
        "render_views_per_s": round(n / t_render, 1),
        "render_png_views_per_s": round(n / (t_render + t_png), 1),
        "ms_per_view_render": round(1000 * t_render / n, 2),
        "ms_per_view_png": round(1000 * t_png / n, 2),
        "median_faces": int(np.median(faces)),
        "time_vs_views": scaling,
        "time_vs_views_fit": {
            "seconds_per_view": round(float(slope), 5),
            "intercept_s": round(float(icpt), 5),
            "mid_object_faces": mid.n_faces,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=12)
    ap.add_argument("--blender-objects", type=int, default=2)
    ap.add_argument("--blender-views", type=int, default=4)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()[0]
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        tmp = Path(tmp)
        assets = build_assets(tmp / "assets", a.objects)
        cfg = RenderParams(workers=1)
        res["config"] = {
            "image_size": cfg.image_size,
            "views_per_object": len(sample_views(cfg, 0)),
            "msaa": cfg.msaa,
            "png_compress_level": cfg.png_compress_level,
        }
        res["gl_stage_1_worker"] = bench_stage(cfg, assets, tmp / "gl")
        res["gl_stage_1_worker_msaa4"] = bench_stage(cfg.model_copy(update={"msaa": 4}), assets, tmp / "gl4")
        res["gl_inprocess"] = bench_gl_inprocess(assets, cfg)
        bpy = default_blender_python(BlenderParams())
        if bpy.exists():
            # the same first objects, fewer views (Cycles is ~50x slower); fibonacci keeps the view count free
            small = tmp / "assets_b"
            small.mkdir()
            (small / "store").symlink_to(assets / "store")
            lines = (assets / "manifest.jsonl").read_text().splitlines()[: a.blender_objects]
            (small / "manifest.jsonl").write_text("\n".join(lines) + "\n")
            bcfg = RenderParams(
                backend="blender", workers=1, view_sampler="fibonacci", n_views=a.blender_views, object_timeout_s=600
            )
            gcfg = bcfg.model_copy(update={"backend": "gl"})
            res["same_objects"] = {
                "objects": a.blender_objects,
                "views_per_object": a.blender_views,
                "blender_samples": bcfg.blender.samples,
                "gl": bench_stage(gcfg, small, tmp / "gl_b"),
                "blender": bench_stage(bcfg, small, tmp / "bl"),
            }
        else:
            res["same_objects"] = {"skipped": f"no blender python at {bpy}"}
    write_result(OUT, res, load_before=load_before)


if __name__ == "__main__":
    main()

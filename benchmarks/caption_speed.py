"""Captions per second for each caption backend, on CPU (prints numbers, writes benchmarks/results/caption_speed.json).

- template: the captioner alone, and the whole stage (shard read + template + MiniLM cleaning/filter + writes),
  on a real-size batch: N objects x 34 views at 224 px.
- vlm: a tiny randomly initialised BLIP (the real processor/generate/decode path; real BLIP/InstructBLIP weights
  are not available offline, so this measures pipeline overhead, not a real model's speed).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/caption_speed.py [--objects 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from ovt.caption import stage  # noqa: E402
from ovt.caption.base import View  # noqa: E402
from ovt.caption.config import CaptionParams, CleaningParams, TemplateParams, VlmParams  # noqa: E402
from ovt.caption.template import TemplateCaptioner  # noqa: E402
from ovt.caption.vlm import VlmCaptioner  # noqa: E402
from tests.caption.fixtures import ASSETS, render_image, write_fixture  # noqa: E402
from tests.caption.tiny_vlm import build_tiny_blip, build_tiny_instructblip  # noqa: E402

N_VIEWS = 34


def cameras() -> list[tuple[float, float]]:
    rings = [(-40.0, 0.0), (10.0, 22.5), (30.0, 0.0), (60.0, 22.5)]
    cams = [(off + 45.0 * i, el) for el, off in rings for i in range(8)]
    return cams + [(0.0, 90.0), (0.0, -90.0)]


def assets(n: int) -> list[tuple]:
    out = []
    for i in range(n):
        aid, name, cat, label, tags, dims, colour = ASSETS[i % len(ASSETS)]
        out.append((f"{i:04d}" + aid[4:], name, cat, label, tags, dims, colour))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)  # recorded by the frame's `threads`
    cams = cameras()
    res: dict = {
        "objects": args.objects,
        "views_per_object": N_VIEWS,
        "image_px": 224,
    }

    views = [
        View(
            key=f"{a[0]}_{v:03d}",
            asset_id=a[0],
            view=v,
            image=render_image(a[6], v, size=224),
            azimuth=az,
            elevation=el,
            name=a[1],
            category=a[2],
            label=a[3],
            tags=a[4],
            dims_cm=a[5],
        )
        for a in assets(args.objects)
        for v, (az, el) in enumerate(cams)
    ]
    cap = TemplateCaptioner(TemplateParams())
    t = time.perf_counter()
    cap.caption(views, list(range(len(views))))
    res["template_captioner_captions_per_s"] = round(len(views) / (time.perf_counter() - t), 1)

    with tempfile.TemporaryDirectory() as tmp:
        a_dir, r_dir = write_fixture(
            Path(tmp) / "data", assets=assets(args.objects), cameras=cams, objects_per_shard=10, image_size=224
        )
        for name, cfg in [
            ("template_stage_filter_on", CaptionParams()),
            ("template_stage_filter_off", CaptionParams(cleaning=CleaningParams(consistency_filter=False))),
        ]:
            out = Path(tmp) / name
            t = time.perf_counter()
            stats = stage.run(cfg, seed=0, renders_dir=r_dir, assets_dir=a_dir, out_dir=out)
            dt = time.perf_counter() - t
            res[f"{name}_captions_per_s"] = round(stats["views"] / dt, 1)
            res[f"{name}_stats"] = {
                k: stats[k] for k in ("views", "captions", "dropped", "truncated", "consistency_unchecked")
            }
            t = time.perf_counter()
            again = stage.run(cfg, seed=0, renders_dir=r_dir, assets_dir=a_dir, out_dir=out)
            res[f"{name}_noop_rerun_s"] = round(time.perf_counter() - t, 3)
            assert again["shards_captioned"] == 0

        sub = views[: 4 * N_VIEWS]
        for name, folder, prompts in [
            (
                "tiny_blip",
                build_tiny_blip(Path(tmp) / "tiny_blip"),
                dict(prompt_guided="a 3d render of a {category},", prompt_plain="a 3d render of"),
            ),
            ("tiny_instructblip", build_tiny_instructblip(Path(tmp) / "tiny_instructblip"), {}),  # paper's prompt
        ]:
            for beams in (1, 5):
                vlm = VlmCaptioner(
                    VlmParams(model=str(folder), max_new_tokens=32, batch_size=16, num_beams=beams, **prompts)
                )
                vlm.caption(sub[:2], [0, 1])  # warm-up
                t = time.perf_counter()
                vlm.caption(sub, list(range(len(sub))))
                res[f"{name}_beams{beams}_captions_per_s"] = round(len(sub) / (time.perf_counter() - t), 1)
        res["tiny_vlm_note"] = (
            "random-init tiny models (2 layers, width 32, 32 px input, up to 32 new tokens), "
            "batch 16, CPU: pipeline overhead only, not a real model's speed"
        )

    write_result(ROOT / "benchmarks" / "results" / "caption_speed.json", res, load_before=load_before)


if __name__ == "__main__":
    main()

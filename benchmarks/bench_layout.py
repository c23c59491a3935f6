"""Memory layout and image size of the embedded image tower on CPU: what the features stage (frozen pass), the
mining pass (tail, no grad) and a training step (tail, forward + backward) cost per image, NCHW vs channels-last
activations, at the image sizes the pipeline may use.

    .venv/bin/python benchmarks/bench_layout.py [--images 128] [--repeats 3]

Writes benchmarks/results/layout.json: milliseconds per image for every (pass, layout, image size, batch), the
speed-up of channels-last per row, and the machine (cores, torch threads, load average before and after).
Random inputs: the cost of a convolution does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "layout.json"


def per_image_ms(fn, xs: list[torch.Tensor], repeats: int) -> float:
    fn(xs[0])  # warm-up: oneDNN picks its kernels on the first call
    n = sum(x.shape[0] for x in xs)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in xs:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / n


def summarise(rows: list[dict]) -> dict:
    """Headline numbers (README's benchmark table): the embedded default's layout and size vs NCHW at 224 px."""
    at = {(r["pass"], r["image_size"], r["batch"]): r["ms_per_image"] for r in rows}
    out = {}
    for name, batch in (("frozen_pass", 32), ("train_step", 64)):
        old, new = at.get((name, 224, batch)), at.get((name, 160, batch))
        if old and new:
            out[f"{name}_224_nchw_ms"] = old["nchw"]
            out[f"{name}_160_channels_last_ms"] = new["channels_last"]
            out[f"{name}_speedup"] = round(old["nchw"] / new["channels_last"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 160])
    args = ap.parse_args()

    from ovt.model import build_base, build_ovt_model, towers
    from ovt.model.config import ModelParams

    load_before = os.getloadavg()[0]
    rows = []
    for size in args.sizes:
        cfg = ModelParams(arch="embedded", image_size=size)
        model = build_ovt_model(cfg, build_base(cfg, None)).eval()
        k, split = model.first_adapted, model.split
        images = torch.randn(args.images, 3, size, size)
        with torch.no_grad():
            prefix = split.prefix(images, k).contiguous()

        def step(h: torch.Tensor) -> None:
            model.zero_grad(set_to_none=True)
            model.image_tail(h).sum().backward()

        def frozen(x: torch.Tensor) -> None:
            with torch.no_grad():
                split.pooled(split.prefix(x, k), k)

        def mine(h: torch.Tensor) -> None:
            with torch.no_grad():
                model.image_tail(h)

        passes = {
            "frozen_pass": (frozen, images, [32]),
            "mining": (mine, prefix, [64, 256]),
            "train_step": (step, prefix, [64]),
        }
        for name, (fn, data, batches) in passes.items():
            for batch in batches:
                xs = list(data.split(batch))
                ms = {}
                for layout, on in (("nchw", False), ("channels_last", True)):
                    towers.CHANNELS_LAST = on
                    ms[layout] = round(per_image_ms(fn, xs, args.repeats), 3)
                towers.CHANNELS_LAST = True
                row = {
                    "pass": name,
                    "image_size": size,
                    "batch": batch,
                    "ms_per_image": ms,
                    "speedup": round(ms["nchw"] / ms["channels_last"], 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {
        "benchmark": "layout",
        "images": args.images,
        "repeats": args.repeats,
        "rows": rows,
        "summary": summarise(rows),
    }
    write_result(RESULTS, out, load_before=load_before, echo=False)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

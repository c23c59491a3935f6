"""Embedded OVT model on CPU: full encode_image vs image_tail on a cached prefix, and one tail training step.

Why: training on CPU caches `image_prefix` once (everything below the first adapted block is frozen); this measures
what that saves per step. Prints numbers and writes benchmarks/results/model_forward.json.
Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/model_forward.py [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402
from ovt.model import LoraParams, ModelParams, build_base, build_ovt_model  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--last-blocks", type=int, default=2)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    cfg = ModelParams(lora=LoraParams(placement="conv", last_blocks=args.last_blocks))
    model = build_ovt_model(cfg, build_base(cfg))
    build_s = time.perf_counter() - t0
    x = torch.randn(args.batch, 3, 224, 224)
    text = model.encode_text([f"a 3D render of a class{i}." for i in range(args.batch)])
    model.eval()
    with torch.no_grad():
        full = timed(lambda: model.encode_image(x), args.repeats)
        prefix = model.image_prefix(x)
        tail = timed(lambda: model.image_tail(prefix), args.repeats)

    def step():
        model.zero_grad(set_to_none=True)
        z = model.image_tail(prefix)
        F.cross_entropy(model.logit_scale.exp() * z @ text.T, torch.arange(args.batch)).backward()

    model.train()
    tail_step = timed(step, args.repeats)
    result = {
        "batch": args.batch,
        "image_size": 224,
        "last_blocks": args.last_blocks,
        "trainable_parameters": model.count_trainable(),
        "build_s": round(build_s, 2),
        "encode_image_full_s": round(full, 3),
        "image_tail_s": round(tail, 3),
        "tail_train_step_s": round(tail_step, 3),
        "prefix_bytes_per_image": prefix[0].numel() * 4,
    }
    write_result(Path(__file__).parent / "results" / "model_forward.json", result, load_before=load_before)


if __name__ == "__main__":
    main()

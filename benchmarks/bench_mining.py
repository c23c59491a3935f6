"""Max-step benchmark: one OVT epoch of training steps and the full-pass mining before and after the fast path, in
one run, on a real workspace (default /tmp/sweep: its params.yaml, data/renders, data/captions, data/features and
models/base, read only) or, without one, on a synthetic set of the same shape.

    python benchmarks/bench_mining.py [--workspace /tmp/sweep] [--reps 2] [--steps N] [--profile]
    python benchmarks/bench_mining.py --synthetic [--objects 415 --views 26]

The reference path (`Trainer.fast_mining = False`: adapters unfolded, deterministic NaN fill on, grouped batches,
one object at a time) and the fast path mine from the same weights, interleaved, at epoch 0 (fresh adapters) and
after one epoch of steps (trained adapters); the mined sets are compared. mining_share = one pass / one epoch of
training steps (`Trainer.fit`'s definition). The machine may be shared: quote the ratios of one run, not seconds.

Why a pass costs what it costs: the FLOPs of one training step and of one mining forward are counted (torch's
FlopCounterMode: convolutions and matrix products, forward and backward), so the result also says which share a pass
would have if it ran at the training steps' FLOP rate (`flops.share_at_train_rate`), and the rate each achieves.
Writes benchmarks/results/mining.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from ovt.train.data import build_table  # noqa: E402
from ovt.train.distributed import DistContext  # noqa: E402
from ovt.train.loop import Trainer, inference_pass  # noqa: E402
from ovt.train.mining import MinedSet  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "mining.json"


def real_trainer(ws: Path, work: Path) -> Trainer:
    """The ovt variant as the train stage builds it (ovt.train.stage.run), on the workspace's data and base."""
    from ovt.config import load_params
    from ovt.features import open_store
    from ovt.model import build_base, build_ovt_model

    p = load_params(ws / "params.yaml")
    cfg = p.train.model_copy(update={"tracking": p.train.tracking.model_copy(update={"progress": False})})
    store = open_store(ws / "data" / "features", p.model)
    torch.manual_seed(p.base.seed)
    model = build_ovt_model(p.model, build_base(p.model, ws / "models" / "base"))
    table = build_table(cfg.data, ws / "data" / "renders", ws / "data" / "captions")
    return Trainer(
        model, table, cfg, variant="ovt", seed=p.base.seed, work_dir=work, ctx=DistContext(), key="bench", store=store
    )


def synthetic_trainer(args, work: Path) -> Trainer:
    """The default model (random projections) on a synthetic tree of `objects` × `views`; the prefix tensor is the
    frozen tower's output of 64 of its images, tiled (forward cost does not depend on the values), so no
    per-view prefix pass is needed."""
    from benchmarks.bench_train import synthetic_tree
    from ovt.model import ModelParams, build_base, build_ovt_model
    from ovt.train.config import TrainParams

    mcfg = ModelParams(image_size=args.image_size)
    torch.manual_seed(0)
    model = build_ovt_model(mcfg, build_base(mcfg, None))
    renders, captions = synthetic_tree(work / "tree", args.objects, args.views, args.image_size)
    cfg = TrainParams(epochs=2, deterministic=True, tracking={"progress": False})
    table = build_table(cfg.data, renders, captions)
    tr = Trainer(model, table, cfg, variant="ovt", seed=0, work_dir=work, ctx=DistContext(), key="bench")
    sample = tr.inputs.images(torch.arange(min(64, len(table.pairs))))
    with torch.no_grad():
        pre = model.image_prefix(sample).float()
    reps = -(-len(table.pairs) // pre.shape[0])
    prefix = pre.repeat(reps, *([1] * (pre.dim() - 1)))[: len(table.pairs)].contiguous()
    tr.shared.update({"table": (table.rows, table.n_mv), "prefix": prefix, "prefix_reason": ""})
    return tr


def mine_timed(tr: Trainer, epoch: int, fast: bool) -> tuple[float, MinedSet]:
    tr.miner.fast = fast
    t0 = time.perf_counter()
    mined = tr.mine(epoch)
    return time.perf_counter() - t0, mined


def compare(a: MinedSet, b: MinedSet) -> dict:
    cos = torch.nn.functional.cosine_similarity(a.centres, b.centres, dim=-1)
    live = a.centres.abs().sum(1) > 0
    return {
        "centres_max_abs_diff": float((a.centres - b.centres).abs().max()),
        "centres_min_cos": round(float(cos[live].min()), 7) if live.any() else None,
        "cos_to_centre_max_abs_diff": float((a.cos_to_centre - b.cos_to_centre).abs().max()),
        "hard_views": int(a.hard.sum()),
        "hard_views_differing": int((a.hard ^ b.hard).sum()),
    }


def profile_batch(tr: Trainer, rows: torch.Tensor) -> dict:
    """Top operators of one mining forward (`mining.batch_size` rows) on the reference and the fast path."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for name, fast in (("reference", False), ("fast", True)):
        ctx = inference_pass(tr.model) if fast else contextlib.nullcontext()
        with ctx:
            tr.embed_rows(rows)  # warm
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    tr.embed_rows(rows)
        ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ev)
        out[name] = {
            "ms_per_view": round(total / 1e3 / 3 / rows.numel(), 4),
            "top_ops_pct": {e.key: round(100 * e.self_cpu_time_total / total, 1) for e in ev[:8]},
        }
        print(name, json.dumps(out[name], indent=1), flush=True)
    return out


def count_flops(tr: Trainer, step_rows: tuple[torch.Tensor, torch.Tensor], mine_rows: torch.Tensor) -> dict:
    """FLOPs of one training step (forward, backward; the optimizer's elementwise work is not counted) per sample,
    and of the fast path's mining forward per view. The step is a real one: call this after the timed steps."""
    from torch.utils.flop_counter import FlopCounterMode

    rows_mv, rows_2d = step_rows
    with FlopCounterMode(display=False) as fc:
        tr.train_step(rows_mv, rows_2d, 0)
    step = fc.get_total_flops()
    with inference_pass(tr.model), FlopCounterMode(display=False) as fc:
        tr.embed_rows(mine_rows)
    return {
        "train_flops_per_sample": step / (rows_mv.numel() + rows_2d.numel()),
        "mining_flops_per_view": fc.get_total_flops() / mine_rows.numel(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/sweep"))
    ap.add_argument("--synthetic", action="store_true", help="ignore the workspace: a synthetic set")
    ap.add_argument("--objects", type=int, default=415)
    ap.add_argument("--views", type=int, default=26)
    ap.add_argument("--image-size", type=int, default=160)  # params.yaml render.image_size = model.image_size
    ap.add_argument("--reps", type=int, default=2, help="interleaved reference/fast passes after the epoch")
    ap.add_argument("--steps", type=int, default=None, help="time this many steps (default: the whole epoch)")
    ap.add_argument("--profile", action="store_true", help="operator profile of one mining batch, both paths")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    ws = args.workspace
    real = not args.synthetic and all(
        (ws / p).exists() for p in ("params.yaml", "data/features", "data/renders", "data/captions", "models/base")
    )
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-mining-") as tmp:
        t0 = time.perf_counter()
        tr = real_trainer(ws, Path(tmp) / "w") if real else synthetic_trainer(args, Path(tmp))
        tr.prepare(resume=False)
        setup_s = time.perf_counter() - t0
        print(f"{'workspace ' + str(ws) if real else 'synthetic'}: {tr.n_mv} views, {len(tr.rows_of_object)} objects, "
              f"{tr.steps_per_epoch} steps/epoch, setup {setup_s:.0f}s", flush=True)  # fmt: skip
        runs: dict[str, list[float]] = {"reference_epoch0": [], "fast_epoch0": [], "reference": [], "fast": []}
        # epoch 0 (adapters at init, LoRA B = 0): the first pass of the run, as fit() does it
        dt, ref0 = mine_timed(tr, 0, fast=False)
        runs["reference_epoch0"].append(dt)
        dt, fast0 = mine_timed(tr, 0, fast=True)
        runs["fast_epoch0"].append(dt)
        print("epoch 0:", {k: [round(x, 2) for x in v] for k, v in runs.items() if v}, flush=True)
        tr.mined = fast0
        order = tr.epoch_order(0)
        b = tr.cfg.data.mvcap_batch
        steps = min(args.steps or tr.steps_per_epoch, tr.steps_per_epoch)
        step_s = []
        for s in range(steps):
            t0 = time.perf_counter()
            tr.train_step(order[s * b : (s + 1) * b], tr.twod.rows(tr.global_step), 0)
            step_s.append(time.perf_counter() - t0)
            tr.global_step += 1
        train_s = sum(step_s) / steps * tr.steps_per_epoch  # one epoch of steps (measured or extrapolated)
        print(f"epoch: {steps} steps, {sum(step_s):.1f}s, epoch train_s {train_s:.1f}", flush=True)
        mined: dict[str, MinedSet] = {}
        for _ in range(args.reps):  # interleaved: drift and neighbours' load hit both paths alike
            for name, fast in (("reference", False), ("fast", True)):
                dt, mined[name] = mine_timed(tr, 1, fast)
                runs[name].append(dt)
                print(name, round(dt, 2), flush=True)
        first_batch = torch.cat(tr.rows_of_object)[: tr.cfg.mining.batch_size]  # one mining forward's rows
        flops = count_flops(tr, (order[:b], tr.twod.rows(tr.global_step)), first_batch)
        prof = profile_batch(tr, first_batch) if args.profile else None
        med = statistics.median
        ref_s, fast_s = med(runs["reference"]), med(runs["fast"])
        epoch_flops = flops["train_flops_per_sample"] * (b + tr.cfg.data.twod_batch) * tr.steps_per_epoch
        pass_flops = flops["mining_flops_per_view"] * tr.n_mv
        flops.update(
            {
                "train_gflop_per_epoch": round(epoch_flops / 1e9, 2),
                "mining_gflop_per_pass": round(pass_flops / 1e9, 2),
                # the share a pass would have at the steps' FLOP rate: below it only if mining runs faster per FLOP
                "share_at_train_rate": round(pass_flops / epoch_flops, 4),
                "train_gflop_per_s": round(epoch_flops / train_s / 1e9, 1),
                "mining_gflop_per_s": {
                    "reference": round(pass_flops / ref_s / 1e9, 1),
                    "fast": round(pass_flops / fast_s / 1e9, 1),
                },
            }
        )
        res = {
            "data": f"workspace {ws}" if real else f"synthetic {args.objects}x{args.views} @ {args.image_size}px",
            "mv_views": tr.n_mv,
            "objects": len(tr.rows_of_object),
            "steps_per_epoch": tr.steps_per_epoch,
            "samples_per_step": [b, tr.cfg.data.twod_batch],
            "mining_batch": tr.cfg.mining.batch_size,
            "steps_timed": steps,
            "step_s_median": round(med(step_s), 4),
            "train_s": round(train_s, 2),
            "mining_s": {"reference": round(ref_s, 2), "fast": round(fast_s, 2)},
            "mining_s_runs": {k: [round(x, 2) for x in v] for k, v in runs.items()},
            "mining_share": {"reference": round(ref_s / train_s, 4), "fast": round(fast_s / train_s, 4)},
            "mining_share_epoch0": {
                "reference": round(runs["reference_epoch0"][0] / train_s, 4),
                "fast": round(runs["fast_epoch0"][0] / train_s, 4),
            },
            "speedup": round(ref_s / fast_s, 3),
            "ms_per_view": {"reference": round(1e3 * ref_s / tr.n_mv, 3), "fast": round(1e3 * fast_s / tr.n_mv, 3)},
            "ms_per_train_sample": round(1e3 * med(step_s) / (b + tr.cfg.data.twod_batch), 3),
            "equivalence_epoch0": compare(ref0, fast0),
            "equivalence_trained": compare(mined["reference"], mined["fast"]),
            "flops": flops,
            "profile_one_batch": prof,
        }
        tr.inputs.close()
    write_result(args.out, res, load_before=load_before)


if __name__ == "__main__":
    main()

"""Train-stage benchmark: OVT step vs a plain contrastive-LoRA step on the same batch (one run, one model),
and the max step's cost (full pass vs reuse) against an epoch; on CUDA, ViT-B-32 OVT throughput at batch 512.

    python benchmarks/bench_train.py [--arch embedded|tiny-test] [--objects 24 --views 12] [--renders R --captions C]

Without --renders/--captions it writes a synthetic render/caption tree (coloured shapes, the architecture's
layout) at the model's image size: timings depend on shapes, not on image content. Prints numbers and writes
benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from ovt.model import ModelParams, build_base, build_ovt_model  # noqa: E402
from ovt.train.config import TrainParams  # noqa: E402
from ovt.train.data import build_table  # noqa: E402
from ovt.train.distributed import DistContext  # noqa: E402
from ovt.train.loop import Trainer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "train.json"


def synthetic_tree(root: Path, objects: int, views: int, size: int) -> tuple[Path, Path]:
    renders, captions = root / "renders", root / "captions"
    (renders / "shards").mkdir(parents=True)
    (captions / "shards").mkdir(parents=True)
    manifest, caps = [], []
    g = torch.Generator().manual_seed(0)
    with tarfile.open(renders / "shards" / "shard-00000.tar", "w") as tf:
        for o in range(objects):
            colour = tuple(int(c) for c in torch.randint(30, 255, (3,), generator=g))
            for v in range(views):
                key = f"obj{o:04d}_{v:03d}"
                im = Image.new("RGB", (size, size))
                s = size // 4 + (v * size // 13) % (size // 2)
                ImageDraw.Draw(im).ellipse(
                    [v % 7 * size // 20, size // 8, v % 7 * size // 20 + s, size // 8 + s], fill=colour
                )
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                info = tarfile.TarInfo(f"{key}.png")
                info.size = len(buf.getvalue())
                tf.addfile(info, io.BytesIO(buf.getvalue()))
                elev = [-30, 0, 20, 45][v % 4]
                manifest.append(
                    {
                        "key": key,
                        "shard": "shards/shard-00000.tar",
                        "asset_id": f"obj{o:04d}",
                        "split": "train",
                        "elevation": elev,
                        "canonical": v == 1,
                        "label": f"class{o % 8}",
                        "name": f"class{o % 8}",
                    }
                )
                caps.append({"key": key, "caption": f"a 3D render of a class{o % 8} object, view {v}"})
    (renders / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest))
    (captions / "shards" / "captions-00000.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps))
    return renders, captions


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def model_cfg_for(arch: str) -> ModelParams:
    if arch == "tiny-test":
        return ModelParams(arch="tiny-test", lora={"placement": "qkv", "last_blocks": 1}, viformer={"ffn": 64})
    if arch == "embedded":
        return ModelParams()
    return ModelParams(arch=arch, lora={"placement": "qkv", "last_blocks": None})  # paper parity on ViTs


def bench_steps(args) -> dict:
    mcfg = model_cfg_for(args.arch)
    torch.manual_seed(0)
    model = build_ovt_model(mcfg, build_base(mcfg, Path(args.base) if args.base else None))
    size = int(getattr(model.preprocess.transforms[0], "size", 224) if hasattr(model.preprocess, "transforms") else 224)
    size = size if isinstance(size, int) else size[0]
    with tempfile.TemporaryDirectory() as tmp:
        tree = (
            (Path(args.renders), Path(args.captions))
            if args.renders
            else synthetic_tree(Path(tmp), args.objects, args.views, size)
        )
        # a long schedule with no warm-up: the timed steps must not exhaust the cosine (LR 0 would freeze the
        # weights and make the reuse-vs-full comparison below trivially identical)
        cfg = TrainParams(
            epochs=1000,
            optim={"warmup_steps": 0},
            data={"mvcap_batch": args.batch, "twod_batch": args.twod_batch},
            mining={"batch_size": args.mining_batch, "mode": "reuse"},
            tracking={"progress": False},
        )
        tr = Trainer(
            model,
            build_table(cfg.data, *tree),
            cfg,
            variant="ovt",
            seed=0,
            work_dir=Path(tmp) / "w",
            ctx=DistContext(device=torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")),
            key="bench",
        )
        tr.prepare(resume=False)
        t_full = timed(lambda: setattr(tr, "mined", tr.mine(0)), 1)[0]  # full pass (epoch 0)
        full = tr.mined
        order = tr.epoch_order(0)
        rows, rows2d = order[: args.batch], tr.twod.rows(0)
        tr.train_step(rows, rows2d, 0)  # warm-up (allocator, autograd graph caches)

        def step(vc: bool):
            tr.use_vc, tr.lam = vc, (1.0 if vc else 0.0)
            return lambda: tr.train_step(rows, rows2d, 0)

        ovt_t, con_t = [], []
        for _ in range(args.reps):  # interleaved so drift and neighbours' load hit both alike
            ovt_t += timed(step(True), 1)
            con_t += timed(step(False), 1)
        # one epoch of OVT steps fills the reuse buffer; then mine both ways from the same weights
        tr.use_vc, tr.lam = True, 1.0
        t0 = time.perf_counter()
        for s in range(tr.steps_per_epoch):
            tr.train_step(order[s * args.batch : (s + 1) * args.batch], tr.twod.rows(s), 0)
        epoch_s = time.perf_counter() - t0
        t_reuse = timed(lambda: setattr(tr, "mined", tr.mine(1)), 1)[0]
        reused = tr.mined
        tr.miner.cfg = tr.miner.cfg.model_copy(update={"mode": "full_pass"})  # the official max step
        t_full2 = timed(lambda: setattr(tr, "mined", tr.mine(1)), 1)[0]
        fresh = tr.mined
        inter = int((reused.hard & fresh.hard).sum())
        union = int((reused.hard | fresh.hard).sum())
        cos = torch.nn.functional.cosine_similarity(reused.centres, fresh.centres, dim=-1)
        med = statistics.median
        return {
            "arch": args.arch,
            "device": str(tr.device),
            "trainable_params": model.count_trainable(),
            "mv_pairs": tr.n_mv,
            "objects": len(tr.rows_of_object),
            "batch": [args.batch, args.twod_batch],
            "cache_build_s": round(tr.timings["cache_s"], 3),
            "step_ovt_s_median": round(med(ovt_t), 4),
            "step_contrastive_s_median": round(med(con_t), 4),
            "step_overhead_pct": round(100 * (med(ovt_t) / med(con_t) - 1), 1),
            "epoch_s": round(epoch_s, 3),
            "steps_per_epoch": tr.steps_per_epoch,
            "mining_full_pass_s": round(t_full2, 3),
            "mining_full_pass_first_s": round(t_full, 3),
            "mining_reuse_s": round(t_reuse, 3),
            "mining_reuse_fresh_rows": tr.tracker.events[-2]["fresh_rows"],
            "mining_batch": args.mining_batch,
            "mining_full_vs_epoch_pct": round(100 * t_full2 / epoch_s, 1),
            "reuse_vs_full_hard_jaccard": round(inter / max(1, union), 3),
            "reuse_vs_full_centre_cos_mean": round(float(cos.mean()), 4),
            "full_pass_hard_changed_vs_epoch0": int((full.hard ^ fresh.hard).sum()),
            "reps": args.reps,
        }


def bench_gpu_vit(args) -> dict | None:
    """ViT-B-32 (random weights: throughput does not depend on them) OVT steps at batch 512 on full images."""
    if not torch.cuda.is_available():
        return None
    from ovt.train.losses import itc_loss, vc_loss

    mcfg = ModelParams(arch="ViT-B-32", lora={"placement": "qkv", "last_blocks": None})
    model = build_ovt_model(mcfg, build_base(mcfg, None)).cuda()
    n = model.count_trainable()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=5e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    b = args.gpu_batch
    x = torch.randn(b, 3, 224, 224, device="cuda")
    txt = torch.nn.functional.normalize(torch.randn(b, 512, device="cuda"), dim=-1)
    cent = torch.nn.functional.normalize(torch.randn(26, 512, device="cuda"), dim=-1)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            z = model.encode_image(x)
        z = z.float()
        loss = itc_loss(z, txt, model.logit_scale) + vc_loss(z[:26], cent, 0.3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        opt.step()

    timed(step, 3)
    t = timed(step, args.gpu_reps)
    return {
        "gpu": torch.cuda.get_device_name(),
        "arch": "ViT-B-32",
        "trainable_params": n,
        "batch": b,
        "step_s_median": round(statistics.median(t), 4),
        "images_per_s": round(b / statistics.median(t), 1),
        "precision": "bf16 autocast",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="embedded")
    ap.add_argument("--base", default=None, help="models/base (embedded); default: random projections")
    ap.add_argument("--renders"), ap.add_argument("--captions")
    ap.add_argument("--objects", type=int, default=24)
    ap.add_argument("--views", type=int, default=26)  # the embedded default's views per object
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--twod-batch", type=int, default=16)
    ap.add_argument("--mining-batch", type=int, default=256)  # the train.mining.batch_size default
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--gpu-batch", type=int, default=512)
    ap.add_argument("--gpu-reps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    body = {"steps": bench_steps(args), "gpu_vit_b32": bench_gpu_vit(args)}
    write_result(args.out, body, load_before=load_before)


if __name__ == "__main__":
    main()

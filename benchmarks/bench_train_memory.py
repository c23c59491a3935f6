"""Host memory of one rank over an epoch of the `ovt.train.loader` stream: it must stay O(batch), not O(dataset).
This measures that loader, not the Trainer (whose input is `ovt.train.inputs`): the Trainer's own host memory, the
real train stage on synthetic MVCap sets at two sizes, is measured by benchmarks/bench_trainer_memory.py
(benchmarks/results/trainer_memory.json).

    python benchmarks/bench_train_memory.py [--images 100000] [--batch 512] [--workers 2]

Writes a synthetic MVCap-layout set (records {path, caption, obj_id, img_id} + view, one caption per view, 32x32
PNG renders, 1,000 per shard) through the shard module, embeds its distinct captions once into a CaptionBank with
the tiny-test text tower, then streams one epoch through `ovt.train.loader` (decode + preprocess in worker
processes) into a consumer that moves each batch as a training step would. The rank's memory is sampled after every
batch: RSS of the training process, RSS of each worker, and every 10 batches the proportional set size (PSS) of the
process and its workers together (RSS would count the pages the forked workers share with it twice) and the
workers' private memory (USS). PSS also splits shared-library pages with every other process on the machine that
maps them, so on a shared machine it moves with the neighbours; the workers' USS and the training process's RSS
are the per-rank figures.

Writes benchmarks/results/train_memory.json: RSS at start (just before the epoch), peak, and growth per 10k images
(least-squares slope after the first 20 % of the epoch, so worker start-up and allocator warm-up are not counted
as growth).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
import torch
from bench_gpu_train import caption_of, text_encoder, write_synthetic_shards

from benchmarks.common import write_result
from ovt.model import ModelParams, build_base, build_ovt_model
from ovt.train.captions import CaptionBank
from ovt.train.loader import LoaderSpec, make_loader

RESULTS = Path(__file__).parent / "results" / "train_memory.json"
MB = 1 << 20


def slope_per_10k(xs: list[int], ys: list[int]) -> float:
    """Least-squares slope of ys over xs, in bytes per 10,000 images."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else 1e4 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def rank_pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def workers_uss(proc: psutil.Process) -> int:
    """Memory private to the loader workers (USS): what they hold beyond the pages they share with the parent."""
    total = 0
    for p in proc.children(recursive=True):
        try:
            total += p.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run(args) -> dict:
    torch.set_num_threads(1)  # a 2-core machine: the loader workers need the cores
    proc = psutil.Process()
    t_all = time.perf_counter()
    cfg = ModelParams(arch="tiny-test", lora={"placement": "qkv", "last_blocks": None}, viformer={"ffn": 64})
    model = build_ovt_model(cfg, build_base(cfg))
    rss_after_model = proc.memory_info().rss
    with tempfile.TemporaryDirectory(prefix="bench-train-memory-") as tmp:
        t0 = time.perf_counter()
        tars = write_synthetic_shards(
            Path(tmp) / "shards", args.images, args.views, 32, 1000, procs=max(1, args.workers)
        )
        write_s = time.perf_counter() - t0
        shard_bytes = sum(t.stat().st_size for t in tars)

        def captions():  # streamed twice by the bank; never a list of all captions
            return (caption_of(*divmod(i, args.views)) for i in range(args.images))

        t0 = time.perf_counter()
        bank = CaptionBank.build(
            Path(tmp) / "captions", captions, text_encoder(model), encoder_key=cfg.arch, batch_size=256
        )
        bank_s = time.perf_counter() - t0
        bank_bytes = sum(p.stat().st_size for p in (Path(tmp) / "captions").glob("*.npy"))
        loader = make_loader(
            tars, model.preprocess, LoaderSpec(batch_size=args.batch, num_workers=args.workers), seed=0, bank=bank
        )
        rss_start = proc.memory_info().rss
        pss_start = rank_pss(proc)
        seen, samples = 0, []
        t0 = time.perf_counter()
        checksum = 0.0
        for i, b in enumerate(loader):
            # what a training step holds of a batch: its tensors (moved as they would be), then nothing
            checksum += float(b.images[:, :, 0, 0].sum()) + float(b.text_emb[:, 0].sum())
            seen += len(b.keys)
            workers = [p.memory_info().rss for p in proc.children(recursive=True)]
            row = {"images": seen, "rss": proc.memory_info().rss, "workers_rss": workers}
            if i % 10 == 0:
                row["pss_rank"] = rank_pss(proc)
                row["workers_uss"] = workers_uss(proc)
            samples.append(row)
        epoch_s = time.perf_counter() - t0
    if seen != args.images:
        raise RuntimeError(f"the epoch yielded {seen} images, expected {args.images}")
    tail = [s for s in samples if s["images"] >= 0.2 * args.images]
    pss = [s for s in tail if "pss_rank" in s]
    peak_workers = max(sum(s["workers_rss"]) for s in samples)
    return {
        "config": {
            "images": args.images,
            "views_per_object": args.views,
            "image_size": 32,
            "batch": args.batch,
            "loader_workers": args.workers,
            "shards": len(tars),
            "images_per_shard": 1000,
            "caption_encoder": cfg.arch,
            "prefetch_factor": 2,
        },
        "data": {
            "shard_bytes": shard_bytes,
            "caption_bank_bytes": bank_bytes,
            "distinct_captions": bank.count,
            "shards_write_s": round(write_s, 2),
            "caption_bank_s": round(bank_s, 2),
        },
        "epoch": {"s": round(epoch_s, 2), "images_per_s": round(seen / epoch_s, 1), "batches": len(samples)},
        "rss_after_model_bytes": rss_after_model,
        "rss_start_bytes": rss_start,
        "rss_peak_bytes": max(s["rss"] for s in samples),
        "rss_end_bytes": samples[-1]["rss"],
        "rss_growth_per_10k_images_bytes": round(slope_per_10k([s["images"] for s in tail], [s["rss"] for s in tail])),
        "workers_rss_peak_bytes": peak_workers,
        "workers_uss_first_bytes": samples[0]["workers_uss"],
        "workers_uss_peak_bytes": max(s["workers_uss"] for s in samples if "workers_uss" in s),
        "workers_uss_growth_per_10k_images_bytes": round(
            slope_per_10k([s["images"] for s in pss], [s["workers_uss"] for s in pss])
        ),
        "rank_pss_start_bytes": pss_start,
        "rank_pss_peak_bytes": max(s["pss_rank"] for s in samples if "pss_rank" in s),
        "rank_pss_growth_per_10k_images_bytes": round(
            slope_per_10k([s["images"] for s in pss], [s["pss_rank"] for s in pss])
        ),
        "batch_tensor_bytes": args.batch * 3 * 32 * 32 * 4,
        "checksum": round(checksum, 3),
        "total_s": round(time.perf_counter() - t_all, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--views", type=int, default=24, help="views per object")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    res = write_result(args.out, run(args), load_before=load_before, echo=False)
    print(
        f"{args.images} images in {res['epoch']['s']} s: RSS start {res['rss_start_bytes'] / MB:.0f} MiB, "
        f"peak {res['rss_peak_bytes'] / MB:.0f} MiB, growth {res['rss_growth_per_10k_images_bytes'] / MB:+.2f} "
        f"MiB/10k images; rank PSS start {res['rank_pss_start_bytes'] / MB:.0f} MiB, peak "
        f"{res['rank_pss_peak_bytes'] / MB:.0f} MiB, growth {res['rank_pss_growth_per_10k_images_bytes'] / MB:+.2f} "
        f"MiB/10k; workers USS peak {res['workers_uss_peak_bytes'] / MB:.0f} MiB, growth "
        f"{res['workers_uss_growth_per_10k_images_bytes'] / MB:+.2f} MiB/10k -> {args.out}"
    )
    return res


if __name__ == "__main__":
    main()

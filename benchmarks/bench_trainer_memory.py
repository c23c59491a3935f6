"""Host memory of one rank of the real Trainer (`ovt.train.stage.run`) over an epoch on a synthetic MVCap set, at two
dataset sizes: what the rank holds per dataset row and what stays O(batch).

    python benchmarks/bench_trainer_memory.py [--images 100000] [--small-images 10000] [--batch 500] [--workers 2]
    python benchmarks/bench_trainer_memory.py --quick --out /tmp/trainer_memory.json   # seconds: the same code

For each size it writes a set in the released MVCap layout (`metadata.json`: one JSON list of {path, caption,
obj_id, img_id} with relative `./views/<uid>/<view>.png` paths; `views/`: 32x32 PNG renders, 24 views per object,
one caption per view), then trains each variant (`ovt` with mining `full_pass`: the max step embeds every view once
an epoch; `contrastive`) in its own fresh process, so one run's freed-but-kept heap does not count for the next:
`ovt.train.stage.run` with TrainParams built from the params schema (one epoch of whole batches, full forward:
`data.cache_prefix: false`, images decoded in `data.num_workers` DataLoader worker processes, `twod_source: none`,
held-out viewpoints off), one rank on the CPU, the tiny-test model (random init, every block adapted).

Inside the training process a background thread samples, every `--interval` s, the RSS of the process and of its
DataLoader workers (psutil children); the `on_step` callback samples after every optimiser step (RSS of the
process and of each worker; every `--uss-every` steps the workers' private memory, USS: RSS counts the pages the
forked workers still share with the trainer). Recorded per run: RSS after imports, after the model is built, when
the inputs are prepared (the first sample that sees the workers: after the table, the readability check and the
caption embeddings, before the mining pass or the first step), at the first optimiser step (`start`: everything
per-dataset is built), peak (sampled, and the kernel's high-water mark), end, and the least-squares growth per 10k
images processed after the first 20 % of the epoch (so allocator warm-up is not counted as growth), for the process
and for the workers' USS. `scaling` divides the difference between the two sizes by the difference in rows: bytes
per training row of what scales with the dataset (table rows, caption embeddings, per-view mining state); what does
not (model, batch tensors, workers' decode buffers) cancels out. RSS counts file-backed pages too (the table's
memory-mapped columns, the caption bank as it is read): `rss_anon_*` is the anonymous part, the memory the process
holds privately.

Writes benchmarks/results/trainer_memory.json. The `ovt.train.loader` stream (not the Trainer's input) is measured by
benchmarks/bench_train_memory.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil

RESULTS = Path(__file__).parent / "results" / "trainer_memory.json"
MB = 1 << 20
IMAGE_SIZE = 32
VARIANTS = ("ovt", "contrastive")
TAIL_FROM = 0.2  # growth is fitted on the samples after this share of the epoch


# ---- the synthetic MVCap set ----------------------------------------------------------------------------------------
def uid_of(obj: int) -> str:
    return f"{obj:032x}"  # MVCap's view folders are 32-hex-digit object uids


def record_of(obj: int, view: int) -> dict:
    from bench_gpu_train import caption_of

    return {
        "path": f"./views/{uid_of(obj)}/{view:03d}.png",
        "caption": caption_of(obj, view),
        "obj_id": obj,
        "img_id": obj * 100 + view,  # the release's img_id: object id then the two-digit view
    }


def _write_views(job: tuple[str, int, int, int, int]) -> int:
    from bench_gpu_train import _image

    root, start, stop, views, size = job
    written = 0
    for i in range(start, stop):
        obj, view = divmod(i, views)
        folder = Path(root) / "views" / uid_of(obj)
        if view == 0:  # jobs start at an object's first view
            folder.mkdir(parents=True, exist_ok=True)
        data = _image(i, obj, view, size, "PNG")
        (folder / f"{view:03d}.png").write_bytes(data)
        written += len(data)
    return written


def write_mvcap_set(root: Path, images: int, views: int, size: int = IMAGE_SIZE, procs: int = 1) -> dict:
    """`images` views (`views` per object, the last object possibly fewer) in the released MVCap layout under
    `root`; returns what was written. The metadata goes through the caption stage's writer of that format."""
    import bench_gpu_train  # noqa: F401 - imported before the pool forks, not once in every writer

    from ovt.caption.mvcap import write_metadata

    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    step = max(views, -(-images // (8 * max(1, procs))) // views * views)  # whole objects per job
    jobs = [(str(root), s, min(s + step, images), views, size) for s in range(0, images, step)]
    if procs > 1:
        with ProcessPoolExecutor(procs) as ex:
            png_bytes = sum(ex.map(_write_views, jobs))
    else:
        png_bytes = sum(_write_views(j) for j in jobs)
    n = write_metadata(root / "metadata.json", (record_of(*divmod(i, views)) for i in range(images)))
    return {
        "records": n,
        "objects": -(-images // views),
        "png_bytes": png_bytes,
        "metadata_bytes": (root / "metadata.json").stat().st_size,
        "write_s": round(time.perf_counter() - t0, 2),
    }


# ---- one training run (a child process) -----------------------------------------------------------------------------
def model_params():
    from ovt.model import ModelParams

    # every block adapted: the frozen prefix is empty, so the full forward is what training runs anyway
    return ModelParams(arch="tiny-test", lora={"placement": "qkv", "last_blocks": None}, viformer={"ffn": 64})


def train_params(metadata: Path, variant: str, batch: int, workers: int, mining_batch: int):
    from ovt.train.config import (
        DataParams,
        HeldoutViewpointParams,
        MiningParams,
        TrackingParams,
        TrainParams,
    )

    return TrainParams(
        variants=[variant],
        seeds=1,
        epochs=1,
        max_steps=None,  # the whole epoch
        checkpoint_every=10**9,  # one checkpoint, at the last step
        data=DataParams(
            mvcap_metadata=metadata,
            mvcap_image_root=metadata.parent,
            mvcap_batch=batch,
            twod_source="none",
            twod_batch=0,
            cache_prefix=False,
            num_workers=workers,
        ),
        mining=MiningParams(mode="full_pass", batch_size=mining_batch),
        tracking=TrackingParams(progress=False, log_every=10**9),
        heldout_viewpoints=HeldoutViewpointParams(enabled=False),
    )


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _rss(p: psutil.Process) -> int | None:
    try:
        return p.memory_info().rss
    except psutil.Error:
        return None


def _anon(pid: int) -> int | None:
    """Resident anonymous memory (the heap, tensors): RSS minus the file-backed pages (code, memory-mapped columns
    and caption bank), which the kernel can drop and processes share."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _uss(p: psutil.Process) -> int | None:
    try:
        return p.memory_full_info().uss
    except psutil.Error:
        return None


class Sampler(threading.Thread):
    """RSS of this process and of its workers every `interval` s, with the optimiser step it was taken at."""

    def __init__(self, proc: psutil.Process, interval: float):
        super().__init__(daemon=True)
        self.proc, self.interval, self.step = proc, interval, 0
        self.samples: list[dict] = []
        self._halt = threading.Event()
        self.t0 = time.perf_counter()

    def sample(self) -> dict:
        workers = [r for r in map(_rss, _children(self.proc)) if r is not None]
        row = {
            "t": round(time.perf_counter() - self.t0, 3),
            "step": self.step,
            "rss": self.proc.memory_info().rss,
            "anon": _anon(self.proc.pid),
            "workers": len(workers),
            "workers_rss": sum(workers),
        }
        self.samples.append(row)
        return row

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def slope_per_10k(xs: list[int], ys: list[int]) -> float:
    from bench_train_memory import slope_per_10k as slope

    return slope(xs, ys)


def train_once(spec: dict) -> dict:
    """Train one variant on one set in this process and return its memory record."""
    import torch

    from ovt.train.stage import TrainPaths, run

    torch.set_num_threads(spec["torch_threads"])  # the DataLoader workers need the other cores
    proc = psutil.Process()
    rss_imports = proc.memory_info().rss
    sampler = Sampler(proc, spec["interval"])
    marks: dict[str, int] = {}
    steps: list[dict] = []
    batch, uss_every = spec["batch"], spec["uss_every"]
    mcfg = model_params()

    def build():
        from ovt.model import build_base, build_ovt_model

        model = build_ovt_model(mcfg, build_base(mcfg))
        marks["rss_model_bytes"] = proc.memory_info().rss
        return model

    def on_step(step: int) -> None:
        sampler.step = step
        kids = _children(proc)
        row = {
            "step": step,
            "images": step * batch,
            "rss": proc.memory_info().rss,
            "anon": _anon(proc.pid),
            "workers_rss": [r for r in map(_rss, kids) if r is not None],
        }
        if step == 1 or step % uss_every == 0:
            row["workers_uss"] = sum(u for u in map(_uss, kids) if u is not None)
        steps.append(row)

    out = Path(spec["out_dir"])
    cfg = train_params(Path(spec["metadata"]), spec["variant"], batch, spec["workers"], spec["mining_batch"])
    paths = TrainPaths(
        renders_dir=out / "none", captions_dir=out / "none", base_dir=None, features_dir=None, out_dir=out / "models"
    )
    sampler.start()
    t0 = time.perf_counter()
    stats = run(cfg, seed=0, paths=paths, model_cfg=mcfg, build_model=build, resume=False, on_step=on_step)
    wall = time.perf_counter() - t0
    sampler.stop()
    vstats = stats[spec["variant"]]
    if not steps:
        raise RuntimeError(f"{spec['variant']}: the train stage ran no step")
    n = spec["images"]
    prepared = next((s for s in sampler.samples if s["workers"] > 0), None)
    last = steps[-1]["step"]
    before_steps = [s for s in sampler.samples if s["step"] == 0]
    during = [s["rss"] for s in steps] + [s["rss"] for s in sampler.samples if 0 < s["step"] < last]
    after = [s["rss"] for s in sampler.samples if s["step"] == last]
    tail = [s for s in steps if s["images"] >= TAIL_FROM * steps[-1]["images"]]
    uss = [s for s in steps if "workers_uss" in s]
    uss_tail = [s for s in uss if s["images"] >= TAIL_FROM * steps[-1]["images"]]
    sampled_peak = max([s["rss"] for s in sampler.samples] + [s["rss"] for s in steps])
    return {
        "variant": spec["variant"],
        "images": n,
        "steps": vstats["steps"],
        "steps_per_epoch": vstats["steps_per_epoch"],
        "epochs": vstats["steps"] / vstats["steps_per_epoch"],
        "rows_processed": steps[-1]["images"],
        "rows_dropped_by_drop_last": n - vstats["steps_per_epoch"] * batch,
        "mining_rows": n if spec["variant"] == "ovt" else 0,  # full_pass: every view embedded once an epoch
        "input": vstats["input"],
        "mv_pairs": vstats["mv_pairs"],
        "objects": vstats["objects"],
        "wall_s": round(wall, 2),
        "train_s": vstats["train_s"],
        "mining_s": vstats["mining_s"],
        "samples_per_s": vstats["samples_per_s"],
        "rss_after_imports_bytes": rss_imports,
        "rss_model_bytes": marks.get("rss_model_bytes"),
        "rss_inputs_prepared_bytes": prepared["rss"] if prepared else None,
        "inputs_prepared_at_s": prepared["t"] if prepared else None,
        "rss_peak_before_first_step_bytes": max(s["rss"] for s in before_steps) if before_steps else None,
        "rss_start_bytes": steps[0]["rss"],
        "rss_peak_during_steps_bytes": max(during),
        # after the last step the stage saves the checkpoint's model, the caption-embedding cache and the metrics
        "rss_peak_after_last_step_bytes": max(after) if after else None,
        "rss_peak_bytes": sampled_peak,
        "rss_high_water_mark_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_end_bytes": steps[-1]["rss"],
        # the anonymous part of RSS: what the process holds privately (file-backed pages are reclaimable cache)
        "rss_anon_start_bytes": steps[0]["anon"],
        "rss_anon_peak_bytes": max(s["anon"] or 0 for s in [*steps, *sampler.samples]),
        "rss_anon_end_bytes": steps[-1]["anon"],
        "rss_growth_per_10k_images_bytes": round(slope_per_10k([s["images"] for s in tail], [s["rss"] for s in tail])),
        "workers": max(len(s["workers_rss"]) for s in steps),
        "workers_rss_peak_bytes": max(
            [sum(s["workers_rss"]) for s in steps] + [s["workers_rss"] for s in sampler.samples]
        ),
        "workers_uss_first_bytes": uss[0]["workers_uss"],
        "workers_uss_peak_bytes": max(s["workers_uss"] for s in uss),
        "workers_uss_end_bytes": uss[-1]["workers_uss"],
        "workers_uss_growth_per_10k_images_bytes": round(
            slope_per_10k([s["images"] for s in uss_tail], [s["workers_uss"] for s in uss_tail])
        ),
        "batch_tensor_bytes": batch * 3 * IMAGE_SIZE * IMAGE_SIZE * 4,
        "step_samples": len(steps),
        "timer_samples": len(sampler.samples),
        # the steps whose workers' USS was sampled: [images processed, RSS, workers' summed RSS, workers' USS]
        "trace": [[s["images"], s["rss"], sum(s["workers_rss"]), s["workers_uss"]] for s in uss],
        # the background samples, thinned to about 60: [s since the stage started, step, RSS, workers, workers' RSS]
        # (step 0: model, table, readability check, caption embeddings, then for `ovt` the mining pass)
        "timeline": [
            [s["t"], s["step"], s["rss"], s["workers"], s["workers_rss"]]
            for s in sampler.samples[:: max(1, len(sampler.samples) // 60)]
        ],
    }


def table_bytes(metadata: Path) -> dict:
    """Python heap held by one `TrainTable` of the set (tracemalloc around `build_table`): the per-row state the
    stage keeps, before the trainer's own copies and indices."""
    import tracemalloc

    import ovt.caption.mvcap  # noqa: F401 - imported first: its import is not the table
    from ovt.train.data import build_table, load_table

    cfg = train_params(metadata, "ovt", 1, 0, 1).data
    tracemalloc.start()
    try:
        table = build_table(cfg, None, None)
        current, peak = tracemalloc.get_traced_memory()
        n, columns = len(table.pairs), table.rows.nbytes
        del table
        base = tracemalloc.get_traced_memory()[0]
        # what the train stage holds: the table built in a child process, its columns memory-mapped
        staged = load_table(cfg, None, None)
        stage_heap = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(staged.pairs) == n
    return {
        "rows": n,
        "bytes": current,
        "bytes_per_row": round(current / n, 1),
        "build_peak_bytes": peak,
        "build_peak_bytes_per_row": round(peak / n, 1),
        "stage_heap_bytes": stage_heap,
        "stage_heap_bytes_per_row": round(stage_heap / n, 1),
        "columns_bytes": columns,
    }


def _child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    res = train_once(spec)
    Path(spec["result"]).write_text(json.dumps(res))


def train_in_child(spec: dict, work: Path) -> dict:
    """`train_once(spec)` in a fresh interpreter: a process's RSS keeps the heap an earlier run freed."""
    spec_path = work / f"spec-{spec['variant']}-{spec['images']}.json"
    spec = {**spec, "result": str(work / f"result-{spec['variant']}-{spec['images']}.json")}
    spec_path.write_text(json.dumps(spec))
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)], check=True)
    return json.loads(Path(spec["result"]).read_text())


# ---- both sizes, every variant --------------------------------------------------------------------------------------
def per_row(big: dict, small: dict, key: str) -> float | None:
    a, b = big.get(key), small.get(key)
    if a is None or b is None or big["images"] == small["images"]:
        return None
    return round((a - b) / (big["images"] - small["images"]), 1)


SCALED = (
    "rss_model_bytes",
    "rss_inputs_prepared_bytes",
    "rss_peak_before_first_step_bytes",
    "rss_start_bytes",
    "rss_peak_during_steps_bytes",
    "rss_peak_bytes",
    "rss_end_bytes",
    "rss_anon_start_bytes",
    "rss_anon_peak_bytes",
    "rss_anon_end_bytes",
    "workers_uss_peak_bytes",
    "workers_rss_peak_bytes",
)


def run(args) -> dict:
    import torch  # noqa: F401 - before the tables are measured: its import is not the table

    t_all = time.perf_counter()
    sizes = {"large": args.images, "small": args.small_images}
    sets: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-trainer-memory-", dir=args.tmp) as tmp:
        work = Path(tmp)
        for name, n in sizes.items():
            root = work / f"mvcap-{n}"
            procs = max(1, args.workers) if n >= 5000 else 1  # a pool is not worth starting for a few images
            data = write_mvcap_set(root, n, args.views, IMAGE_SIZE, procs=procs)
            print(f"{name}: wrote {n} images in {data['write_s']} s", flush=True)
            table = table_bytes(root / "metadata.json")
            runs = {}
            for variant in args.variants:
                spec = {
                    "metadata": str(root / "metadata.json"),
                    "images": n,
                    "variant": variant,
                    "batch": args.batch,
                    "workers": args.workers,
                    "mining_batch": args.mining_batch,
                    "interval": args.interval,
                    "uss_every": args.uss_every,
                    "torch_threads": args.torch_threads,
                    "out_dir": str(work / f"out-{variant}-{n}"),
                }
                r = train_in_child(spec, work)
                runs[variant] = r
                print(
                    f"{name} {variant}: {r['steps']} steps, {r['rows_processed']} rows in {r['wall_s']} s; RSS start "
                    f"{r['rss_start_bytes'] / MB:.1f} MiB, peak {r['rss_peak_bytes'] / MB:.1f} MiB, growth "
                    f"{r['rss_growth_per_10k_images_bytes'] / MB:+.3f} MiB/10k; workers USS peak "
                    f"{r['workers_uss_peak_bytes'] / MB:.1f} MiB",
                    flush=True,
                )
            sets[name] = {"images": n, "data": data, "table": table, "runs": runs}
    scaling: dict = {
        # one TrainTable's heap per row built in process, and as the stage loads it (built in a child, mapped)
        "table_python_bytes_per_row": sets["large"]["table"]["bytes_per_row"],
        "table_stage_heap_bytes_per_row": sets["large"]["table"]["stage_heap_bytes_per_row"],
    }
    scaling |= {
        v: {
            "rows_difference": sets["large"]["images"] - sets["small"]["images"],
            **{
                k.removesuffix("_bytes") + "_bytes_per_row": per_row(
                    sets["large"]["runs"][v], sets["small"]["runs"][v], k
                )
                for k in SCALED
            },
        }
        for v in args.variants
    }
    return {
        "quick": bool(args.quick),
        "config": {
            "sizes": sizes,
            "views_per_object": args.views,
            "image_size": IMAGE_SIZE,
            "batch": args.batch,
            "loader_workers": args.workers,
            "mining": {"mode": "full_pass", "batch_size": args.mining_batch},
            "variants": list(args.variants),
            "epochs": 1,
            "max_steps": None,
            "cache_prefix": False,
            "twod_source": "none",
            "model": model_params().model_dump(mode="json"),
            "torch_threads": args.torch_threads,
            "sample_interval_s": args.interval,
            "workers_uss_every_steps": args.uss_every,
            "growth_fit_from": TAIL_FROM,
            "process_per_run": True,
        },
        "large": sets["large"],
        "small": sets["small"],
        "scaling": scaling,
        "total_s": round(time.perf_counter() - t_all, 1),
    }


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000, help="the large set")
    ap.add_argument("--small-images", type=int, default=10_000, help="the small set (what scales with the data)")
    ap.add_argument("--views", type=int, default=24, help="views per object")
    ap.add_argument("--batch", type=int, default=500, help="train.data.mvcap_batch (500 divides both default sizes)")
    ap.add_argument("--workers", type=int, default=2, help="train.data.num_workers")
    ap.add_argument("--mining-batch", type=int, default=256, help="train.mining.batch_size")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--interval", type=float, default=0.25, help="background sampling period, s")
    ap.add_argument("--uss-every", type=int, default=10, help="steps between the workers' USS samples")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="200 and 100 images, batch 20: seconds, the same code")
    ap.add_argument("--tmp", type=Path, default=None, help="where the sets are written (default: the temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child_main(args.child)
        return None
    if args.quick:
        args.images, args.small_images, args.batch, args.views, args.uss_every = 200, 100, 20, 8, 2
    if args.small_images >= args.images:
        ap.error("--small-images must be below --images")
    from benchmarks.common import write_result  # here: the --child runs measure their own imports

    load_before = os.getloadavg()[0]
    res = write_result(args.out, run(args), load_before=load_before, echo=False)
    for v in args.variants:
        s = res["scaling"][v]
        print(
            f"{v}: start RSS {s['rss_start_bytes_per_row']} bytes/row, peak {s['rss_peak_bytes_per_row']} bytes/row, "
            f"workers USS peak {s['workers_uss_peak_bytes_per_row']} bytes/row (large - small)"
        )
    print(f"total {res['total_s']} s -> {args.out}")
    return res


if __name__ == "__main__":
    main()

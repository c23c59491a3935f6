"""Benchmark: the acquire stage on the embedded default (all Sweet Home 3D libraries), cold then warm.

Cold = empty output folder (every asset extracted and inspected); warm = rerun on the same folder (store reused,
nothing extracted); one-process = cold again with `workers: 1` (meshes parsed in the stage's own process instead
of a pool), which must write the same manifest. Prints the numbers and writes benchmarks/results/acquire_full.json.

    HF_HUB_OFFLINE=1 python benchmarks/acquire_full.py [--out /tmp/acquire-bench] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from ovt.acquire import AcquireParams, AcquirePaths, run
from ovt.io import sha256_file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/acquire-bench")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cfg = AcquireParams()

    load_before = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    cold = run(cfg, seed=args.seed, paths=AcquirePaths(out), progress=False)
    cold_s, cold_cpu = time.perf_counter() - t, time.process_time() - c
    digest_cold = sha256_file(out / "manifest.jsonl")

    t, c = time.perf_counter(), time.process_time()
    warm = run(cfg, seed=args.seed, paths=AcquirePaths(out), progress=False)
    warm_s, warm_cpu = time.perf_counter() - t, time.process_time() - c
    digest_warm = sha256_file(out / "manifest.jsonl")

    serial = out.with_name(out.name + "-one-process")
    shutil.rmtree(serial, ignore_errors=True)
    t, c = time.perf_counter(), time.process_time()
    run(cfg.model_copy(update={"workers": 1}), seed=args.seed, paths=AcquirePaths(serial), progress=False)
    serial_s, serial_cpu = time.perf_counter() - t, time.process_time() - c
    same_as_serial = sha256_file(serial / "manifest.jsonl") == digest_cold
    shutil.rmtree(serial, ignore_errors=True)

    store_bytes = sum(p.stat().st_size for p in (out / "store").rglob("*") if p.is_file())
    result = {
        "config": "embedded default (AcquireParams())",
        "seed": args.seed,
        # Wall time depends on what else runs on the machine (load average recorded); CPU time much less so.
        # CPU times are this process only: with the pool, the mesh parsing runs in worker processes.
        "cold_s": round(cold_s, 2),
        "warm_s": round(warm_s, 2),
        "cold_cpu_s": round(cold_cpu, 2),
        "warm_cpu_s": round(warm_cpu, 2),
        "cold_one_process_s": round(serial_s, 2),
        "cold_one_process_cpu_s": round(serial_cpu, 2),
        "pool_speedup": round(serial_s / cold_s, 2),
        "manifest_identical_one_process": same_as_serial,
        "workers": cfg.workers or os.cpu_count(),
        "cold_timings_s": cold["timings_s"],
        "warm_timings_s": warm["timings_s"],
        "warm_extracted": warm["n_extracted"],
        "warm_reused": warm["n_reused"],
        "manifest_identical_on_rerun": digest_cold == digest_warm,
        "store_mib": round(store_bytes / 2**20, 1),
        **{
            k: cold[k]
            for k in (
                "n_assets",
                "n_labelled",
                "n_labels",
                "n_candidates",
                "n_filtered",
                "n_failures",
                "failures_by_reason",
                "n_duplicates",
                "n_textured",
                "n_with_missing_files",
                "groups",
                "by_source",
                "by_category",
                "by_split",
                "by_split_labelled",
                "by_label",
                "by_label_split",
            )
        },
    }
    dest = Path(__file__).parent / "results" / "acquire_full.json"
    write_result(dest, result, load_before=load_before)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()

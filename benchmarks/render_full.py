"""Benchmark: the render stage on the real embedded default, timed as a user sees it (stage wall time).

The stage runs in a fresh interpreter (imports, worker start-up, renderer identity, shard writing, manifest and
contact sheet all included) on the assets of `python -m stages.acquire` (data/assets), writing into a scratch
folder. Throughput is reported per core: views / stage wall seconds / cores used (min(workers, CPUs)). Wall time
depends on what else runs on the machine, so the load average and the CPU seconds of the whole process tree are
recorded too (views per CPU second is the load-independent figure). Prints the numbers and writes
benchmarks/results/render_full.json (render_sample.json with --limit).

    python benchmarks/render_full.py [--workers 2] [--limit N] [--executor processes] [--out /tmp/render-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

_CHILD = """
import json, sys
from ovt.config import load_params
from ovt.render.stage import run
p = load_params()
cfg = p.render.model_copy(update=json.loads(sys.argv[1]))
s = run(cfg, seed=p.base.seed, assets_dir=sys.argv[2], out_dir=sys.argv[3], progress=False)
print(json.dumps(s))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--executor", default="processes")
    ap.add_argument("--assets", default=str(ROOT / "data" / "assets"))
    ap.add_argument("--out", default="/tmp/render-bench")
    a = ap.parse_args()
    if not (Path(a.assets) / "manifest.jsonl").exists():
        sys.exit(f"no assets at {a.assets}: run `python -m stages.acquire` first")
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    update = {"workers": a.workers, "limit": a.limit, "executor": a.executor}
    load_before = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(update), a.assets, str(out)], cwd=ROOT, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"render stage failed:\n{proc.stderr[-4000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    cores = min(a.workers, os.cpu_count() or 1)
    views = stats["views_rendered"]
    result = {
        "assets": stats["assets"],
        "objects_ok": stats["objects_ok"],
        "views": views,
        "workers": a.workers,
        "executor": a.executor,
        "cores_used": cores,
        "stage_wall_s": round(wall, 2),
        "stage_cpu_s": round(cpu, 2),
        "views_per_s_per_core": round(views / wall / cores, 1),
        "views_per_cpu_s": round(views / cpu, 1),
        "renderer": stats["renderer"],
        "in_stage_wall_s": stats["wall_seconds"],
        "worker_seconds": stats["worker_seconds"],
        "timings_s": stats.get("timings_s"),
    }
    dest = ROOT / "benchmarks" / "results" / ("render_full.json" if a.limit is None else "render_sample.json")
    write_result(dest, result, load_before=load_before)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()

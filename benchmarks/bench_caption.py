"""Benchmark: the caption stage (template captions) on the real embedded default, timed as a user sees it.

The stage runs in a fresh interpreter (imports, tokenizer load, shard reading, captioning, cleaning, side-car and
MVCap writing all included) over the render output of `python -m stages.render` (data/renders), writing into a
scratch folder. Wall time depends on what else runs on the machine, so the load average and the CPU seconds are
recorded too (captions per CPU second is the load-independent figure). Prints the numbers and writes
benchmarks/results/caption_full.json.

    python benchmarks/bench_caption.py [--renders data/renders] [--out /tmp/caption-bench]
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
from ovt.caption.stage import run
from ovt.config import load_params
p = load_params()
s = run(p.caption, seed=p.base.seed, renders_dir=sys.argv[1], assets_dir=sys.argv[2], out_dir=sys.argv[3])
print(json.dumps(s))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--renders", default=str(ROOT / "data" / "renders"))
    ap.add_argument("--assets", default=str(ROOT / "data" / "assets"))
    ap.add_argument("--out", default="/tmp/caption-bench")
    a = ap.parse_args()
    if not (Path(a.renders) / "manifest.jsonl").exists():
        sys.exit(f"no renders at {a.renders}: run `python -m stages.acquire` and `python -m stages.render` first")
    shutil.rmtree(a.out, ignore_errors=True)
    load_before = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, a.renders, a.assets, a.out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"},
    )
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"caption stage failed:\n{proc.stderr[-4000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result = {
        "backend": stats["backend"],
        "views": stats["views"],
        "captions": stats["captions"],
        "stage_wall_s": round(wall, 2),
        "stage_cpu_s": round(cpu, 2),
        "captions_per_s": round(stats["views"] / wall, 1),
        "captions_per_cpu_s": round(stats["views"] / cpu, 1),
        "in_stage_s": stats["seconds"],
    }
    dest = ROOT / "benchmarks" / "results" / "caption_full.json"
    write_result(dest, result, load_before=load_before)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()

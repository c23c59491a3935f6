"""Start-up time of the `ovt` command line: `ovt --help` and `ovt params` (both must not import torch, open_clip,
peft, mlflow or prefect), each in a fresh interpreter, several times.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]

Writes benchmarks/results/cli_startup.json: per command the wall seconds of every run, their median, the CPU
seconds of the median run, and which heavy modules the command imported (should be none); plus the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cli_startup.json"
HEAVY = ("torch", "open_clip", "peft", "mlflow", "prefect", "dvc")
COMMANDS = {"help": ["--help"], "params": ["params"]}

# Runs the CLI exactly as the console script does, then reports which heavy modules got imported.
PROBE = (
    "import sys, runpy\nsys.argv = ['ovt', *sys.argv[1:]]\ntry:\n    runpy.run_module('cli.app', "
    "run_name='__main__')\nexcept SystemExit:\n    pass\nfinally:\n    import json\n    print('HEAVY ' + "
    f"json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))), file=sys.stderr)\n"
)


def once(args: list[str]) -> tuple[float, float, list[str]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    heavy = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY ")]
    if not heavy:
        raise SystemExit(f"`ovt {' '.join(args)}` did not finish: {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(heavy[-1][len("HEAVY ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    commands = {}
    for name, argv in COMMANDS.items():
        runs = [once(argv) for _ in range(args.repeats)]
        walls = [r[0] for r in runs]
        med = sorted(runs)[len(runs) // 2]
        commands[name] = {
            "argv": ["ovt", *argv],
            "runs_s": [round(w, 3) for w in walls],
            "median_s": round(statistics.median(walls), 3),
            "median_cpu_s": round(med[1], 3),
            "heavy_imports": sorted({m for r in runs for m in r[2]}),
        }
    rec = {
        "benchmark": "cli_startup",
        "repeats": args.repeats,
        "commands": commands,
    }
    write_result(args.out, rec, load_before=load_before)


if __name__ == "__main__":
    main()

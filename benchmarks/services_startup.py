"""Start-up time to healthy (cold: fresh state folder and databases; warm: restart on existing state) and RSS
of each local service, measured on free ports in a temporary state folder.

    .venv/bin/python benchmarks/services_startup.py [--repeats N]

Prints a table and writes benchmarks/results/services_startup.json. RSS is the sum over the service's process
tree, read after the service has been healthy for `--settle` seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from ovt.services import SERVICE_NAMES, ServiceManager
from ovt.services.testing import free_port_settings

RESULTS = Path(__file__).resolve().parent / "results" / "services_startup.json"


def measure_once(settle: float) -> dict:
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ovt-bench-") as tmp:
        mgr = ServiceManager(free_port_settings(tmp))
        try:
            for phase in ("cold", "warm"):
                for r in mgr.up():  # canonical order; s3's time includes creating the buckets
                    rows.setdefault(r.name, {})[f"{phase}_s"] = r.seconds
                time.sleep(settle)
                for name in SERVICE_NAMES:
                    proc = mgr.process(name)
                    rows[name][f"{phase}_rss_mb"] = round(proc.tree_rss() / 2**20, 1)
                    rows[name][f"{phase}_processes"] = 1 + len(psutil.Process(proc.pid()).children(recursive=True))
                t0 = time.monotonic()
                mgr.down()
                rows.setdefault("_stop_all_s", {})[phase] = round(time.monotonic() - t0, 2)
        finally:
            mgr.down()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds healthy before reading RSS")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    runs = [measure_once(args.settle) for _ in range(args.repeats)]
    summary = {}
    for name in SERVICE_NAMES:
        summary[name] = {k: round(statistics.median(r[name][k] for r in runs), 2) for k in runs[0][name]}
    summary["stop_all_s"] = {p: statistics.median(r["_stop_all_s"][p] for r in runs) for p in ("cold", "warm")}
    summary["total_cold_s"] = round(sum(summary[n]["cold_s"] for n in SERVICE_NAMES), 2)
    summary["total_rss_mb"] = round(sum(summary[n]["cold_rss_mb"] for n in SERVICE_NAMES), 1)
    out = {
        "benchmark": "services_startup",
        "repeats": args.repeats,
        "settle_s": args.settle,
        "summary": summary,
        "runs": runs,
    }
    out = write_result(RESULTS, out, load_before=load_before, echo=False)
    print(f"{'service':8} {'cold s':>7} {'warm s':>7} {'RSS MB':>7} {'procs':>5}")
    for name in SERVICE_NAMES:
        s = summary[name]
        print(f"{name:8} {s['cold_s']:7.2f} {s['warm_s']:7.2f} {s['cold_rss_mb']:7.1f} {s['cold_processes']:5.0f}")
    print(
        f"total cold start {summary['total_cold_s']} s, RSS {summary['total_rss_mb']} MB, "
        f"stop all {summary['stop_all_s']} s; load {out['loadavg_1m_before']} -> {out['loadavg_1m_after']}; "
        f"wrote {RESULTS}"
    )


if __name__ == "__main__":
    main()

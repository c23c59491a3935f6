"""What every torch benchmark's result file records around its numbers: where, with what, and under which load."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from ovt.io import atomic_write_json


def write_result(out: Path, body: dict, *, load_before: float) -> dict:
    """`body` framed by host, torch, threads, CPUs, the 1-minute load before and after, date and command; printed and
    written atomically to `out` (the load says whether other work shared the machine during the run)."""
    import torch

    res = {
        "host": platform.node(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_1m_before": round(load_before, 2),
        **body,
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(res, indent=2))
    atomic_write_json(out, res)
    return res

"""What every benchmark's result file records around its numbers: where, with what, and under which load (one frame,
one set of key names, so results of different benchmarks and runs read alike)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from ovt.io import atomic_write_json


def write_result(out: Path, body: dict, *, load_before: float, echo: bool = True) -> dict:
    """`body` framed by host, machine, Python, CPUs, the 1-minute load before and after, date and command; printed
    (`echo`: off where a script prints its own summary of a long result) and written atomically to `out`.

    The load says whether other work shared the machine during the run. torch's version and (this process's) threads
    are recorded only when the run has already imported torch: framing must not cost a torch-free benchmark
    (acquire, render, CLI start-up) the import."""
    torch = sys.modules.get("torch")
    res = {
        "host": platform.node(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        **({"torch": torch.__version__, "threads": torch.get_num_threads()} if torch is not None else {}),
        "cpus": os.cpu_count(),
        "loadavg_1m_before": round(load_before, 2),
        **body,
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
    }
    if echo:
        print(json.dumps(res, indent=2, default=str))
    atomic_write_json(out, res)
    return res

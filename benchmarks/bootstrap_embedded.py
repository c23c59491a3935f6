"""LiT bootstrap of the embedded base on real renders: time, loss and held-out zero-shot accuracy.

Runs the bootstrap stage function with the default BootstrapParams and ModelParams on a renders folder and the
features stage's store, and writes benchmarks/results/bootstrap_embedded.json.
Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bootstrap_embedded.py --renders-dir data/renders \
        --features-dir data/features [--out-dir /tmp/ovt-bench/base] [--seed 2012] [--note "..."]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402
from ovt.model.config import BootstrapParams, ModelParams  # noqa: E402
from ovt.model.stage import BootstrapPaths, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--renders-dir", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ovt-bench/base"))
    ap.add_argument("--features-dir", type=Path, default=Path("data/features"))
    ap.add_argument("--seed", type=int, default=2012)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    paths = BootstrapPaths(
        renders_dir=args.renders_dir, features_dir=args.features_dir, out_dir=args.out_dir, metrics=None
    )
    stats = run(BootstrapParams(), model=ModelParams(), seed=args.seed, paths=paths)
    result = {
        "wall_s": round(time.perf_counter() - t, 1),
        "seed": args.seed,
        "renders_dir": str(args.renders_dir),
        "note": args.note,
        **stats,
    }
    write_result(Path(__file__).parent / "results" / "bootstrap_embedded.json", result, load_before=load_before)


if __name__ == "__main__":
    main()

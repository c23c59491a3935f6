"""The default pipeline, timed stage by stage, from an empty workspace: `ovt run`, then a second `ovt run` with
nothing changed (the no-op rerun).

    .venv/bin/python benchmarks/pipeline.py                      # in a fresh `git clone` of this repository (HEAD)
    .venv/bin/python benchmarks/pipeline.py --workspace . --clean  # here: deletes data/ models/ metrics/ first

Writes benchmarks/results/pipeline.json (README's per-stage table is rendered from it by `ovt report`): per stage
wall and CPU seconds (CPU of the stage process and everything it waited for, from the flow summary, which gets
it from ovt.dvc_driver), push / register / promote seconds, the whole run's wall time (services start included),
the no-op rerun's wall time and its DVC share, and the machine: cores, load average before, date, commit.

Stages run their commands (`ovt run --no-run-cache`): a workspace whose DVC run-cache already knows a stage
would otherwise restore its outputs instead of measuring them. Services: whatever `ovt up` finds under
OVT_STATE_DIR; for a fresh clone that defaults to this checkout's state folder, so a running stack (and the
assets unpacked there by setup) is shared instead of started twice on the same ports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent
RESULTS = HERE / "results" / "pipeline.json"
SUMMARY_KEYS = ("stages", "timings", "seconds")
WORKSPACE_OUTPUTS = ("data", "models", "metrics")


def run_ovt(workspace: Path, args: list[str], env: dict[str, str]) -> tuple[dict, float, float]:
    """`ovt run …` in `workspace`: (its JSON summary, wall seconds, CPU seconds of it and its waited children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "cli.app", "run", *args], cwd=workspace, env=env, stdout=subprocess.PIPE, text=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"`ovt run {' '.join(args)}` failed in {workspace} with exit code {proc.returncode}")
    return parse_summary(proc.stdout), wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def parse_summary(stdout: str) -> dict:
    """The flow summary `ovt run` prints on stdout (one JSON document; the logs go to stderr)."""
    start = stdout.find("{")
    if start < 0:
        raise ValueError(f"no JSON summary in the output of `ovt run`: {stdout[-500:]!r}")
    summary = json.loads(stdout[start:])
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"the `ovt run` summary lacks {missing}: {sorted(summary)}")
    return summary


def record(
    first: dict, first_wall: float, first_cpu: float, noop: dict | None, noop_wall: float | None, machine: dict
) -> dict:
    """benchmarks/results/pipeline.json from the two runs' summaries."""
    timings = first.get("timings") or {}
    out = {
        "benchmark": "pipeline",
        "date": machine.pop("date"),
        "machine": machine,
        "stages": [
            {"stage": s["stage"], "ran": s["ran"], "seconds": s["seconds"], "cpu_seconds": s.get("cpu_seconds")}
            for s in first["stages"]
        ],
        "push_s": timings.get("push"),
        "register_s": round(timings.get("register", 0.0) + timings.get("promote", 0.0), 2) if timings else None,
        "flow_s": first["seconds"],
        "total_s": round(first_wall, 1),
        "total_cpu_s": round(first_cpu, 1),
    }
    if noop is not None:
        out["noop_rerun_s"] = round(noop_wall or 0.0, 1)
        noop_t = noop.get("timings") or {}
        # DVC's work in the no-op: the flow's one status check plus any `dvc repro` it still started; the push
        # (a remote existence check of every object) is reported beside it
        out["noop_rerun_dvc_s"] = round(noop_t.get("dvc_status", 0.0) + sum(s["seconds"] for s in noop["stages"]), 2)
        out["noop_rerun_push_s"] = noop_t.get("push")
        out["noop_rerun_ran"] = [s["stage"] for s in noop["stages"] if s["ran"]]
        out["noop_rerun_registered_new"] = bool((noop.get("register") or {}).get("created"))
    return out


def machine_info(workspace: Path) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True).stdout
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit.strip(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, help="checkout to run in (default: a fresh git clone of HEAD)")
    ap.add_argument(
        "--clean", action="store_true", help=f"delete {', '.join(WORKSPACE_OUTPUTS)} in the workspace first"
    )
    ap.add_argument("--no-rerun", action="store_true", help="skip the no-op rerun")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("ovt_args", nargs="*", help="extra `ovt run` arguments (after --)")
    args = ap.parse_args()

    env = dict(os.environ)
    tmp = None
    if args.workspace is None:
        tmp = Path(tempfile.mkdtemp(prefix="ovt-bench-pipeline-"))
        workspace = tmp / "ovt"
        subprocess.run(["git", "clone", "-q", str(SOURCE), str(workspace)], check=True)
        env.setdefault("OVT_STATE_DIR", str(SOURCE / ".state"))
    else:
        workspace = args.workspace.resolve()
    outputs = untracked_outputs(workspace)
    if outputs and not args.clean:
        raise SystemExit(
            f"{workspace} is not empty ({len(outputs)} output files under "
            f"{', '.join(WORKSPACE_OUTPUTS)}): pass --clean to delete them"
        )
    for p in outputs:
        p.unlink()
    try:
        machine = machine_info(workspace)
        first, wall, cpu = run_ovt(workspace, ["--no-run-cache", *args.ovt_args], env)
        noop = noop_wall = None
        if not args.no_rerun:
            noop, noop_wall, _ = run_ovt(workspace, list(args.ovt_args), env)
        rec = record(first, wall, cpu, noop, noop_wall, machine)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    from ovt.io import atomic_write_json

    atomic_write_json(args.out, rec)
    print(json.dumps(rec, indent=2))


def untracked_outputs(workspace: Path) -> list[Path]:
    """Files under data/ models/ metrics/ that git does not track (git-tracked metrics are rewritten by the run)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *WORKSPACE_OUTPUTS], cwd=workspace, capture_output=True, text=True, check=True
    ).stdout
    tracked = {workspace / f for f in listed.split("\0") if f}
    return [
        p
        for d in WORKSPACE_OUTPUTS
        for p in (workspace / d).rglob("*")
        if (p.is_file() or p.is_symlink()) and p not in tracked and p.name != ".gitignore"
    ]


if __name__ == "__main__":
    main()

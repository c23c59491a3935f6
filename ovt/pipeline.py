"""Driving DVC from Python: `dvc repro <stage>`, `dvc push`, stage order — shared by the CLI and the Prefect flows.

DVC runs in a subprocess (not the internal `Repo.reproduce` API): it is isolated, version-proof, and its output can
be streamed line by line into whatever logger the caller has (Prefect task logs, the terminal). The venv's bin
folder goes first on PATH so `python -m stages.x` in dvc.yaml uses this interpreter, never a global one.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


class DvcError(RuntimeError):
    """A dvc command failed; the message carries the command and the tail of its output."""


@dataclass
class DvcResult:
    args: list[str]
    returncode: int
    seconds: float
    lines: list[str] = field(default_factory=list)

    @property
    def ran_stages(self) -> list[str]:
        return re.findall(r"Running stage '([^']+)'", "\n".join(self.lines))

    @property
    def skipped_stages(self) -> list[str]:
        return re.findall(r"Stage '([^']+)' didn't change, skipping", "\n".join(self.lines))


def dvc_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    # Prepended after `extra` is merged: callers pass whole environments (`{**os.environ, ...}`) whose PATH would
    # otherwise replace this one, and the stages would then run on whatever `python` comes first (pyenv's shim).
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_dvc(args: list[str], *, cwd: Path | str = REPO_ROOT, env: dict[str, str] | None = None,
            on_line: Callable[[str], None] | None = None, check: bool = True) -> DvcResult:
    """Run `python -m dvc <args>`, streaming each output line to `on_line` (default: this module's logger)."""
    cmd = [sys.executable, "-m", "dvc", *args]
    emit = on_line or (lambda line: log.info("%s", line))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=dvc_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        lines.append(line)
        emit(line)
    rc = proc.wait()
    res = DvcResult(args=args, returncode=rc, seconds=time.perf_counter() - t0, lines=lines)
    if check and rc != 0:
        tail = "\n".join(lines[-40:])
        raise DvcError(f"`dvc {' '.join(args)}` failed with exit code {rc} (in {cwd}):\n{tail}")
    return res


def stage_order(dvc_yaml: Path | str = REPO_ROOT / "dvc.yaml") -> list[str]:
    """Stage names in the order dvc.yaml declares them (which is also a valid topological order here)."""
    with open(dvc_yaml, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    return list((doc.get("stages") or {}).keys())


def repro(stage: str | None = None, *, cwd: Path | str = REPO_ROOT, env: dict[str, str] | None = None,
          on_line: Callable[[str], None] | None = None, force: bool = False) -> DvcResult:
    """`dvc repro --single-item <stage>` (upstream stages are run separately, in order, by the caller)."""
    args = ["repro"]
    if stage:
        args += ["--single-item", stage]
    if force:
        args.append("--force")
    return run_dvc(args, cwd=cwd, env=env, on_line=on_line)


def push(*, cwd: Path | str = REPO_ROOT, env: dict[str, str] | None = None,
         on_line: Callable[[str], None] | None = None) -> DvcResult:
    return run_dvc(["push"], cwd=cwd, env=env, on_line=on_line)

"""Driving DVC from Python: `dvc repro <stage>`, `dvc push`, `dvc status` — shared by the CLI and the Prefect flows.

DVC runs in a subprocess (isolated from this process's imports and state, and its output can be streamed into any
logger). What ran is decided from DVC's machine-readable answer, `dvc status --json`, taken before the run — never
by matching its human-readable text. The venv's bin folder goes first on PATH so `python -m stages.x` in dvc.yaml
uses this interpreter, never a global one.

Progress bars (tqdm, DVC's own) redraw a line with `\\r` many times a second: those redraws reach the caller as at
most one line per `progress_step` percent (or one every `progress_every_s` when no percentage is shown), so a
Prefect log holds tens of progress lines, not thousands. The CLI passes `on_line=None, live=True` to let the
terminal show the live bars instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import yaml

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# only to thin out progress redraws; never to decide what DVC did
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


class DvcError(RuntimeError):
    """A dvc command failed; the message carries the command and the tail of its output."""


@dataclass
class DvcResult:
    args: list[str]
    returncode: int
    seconds: float  # wall time of the dvc process
    cpu_seconds: float  # user + system CPU of dvc and every process it waited for (the stage)
    lines: list[str] = field(default_factory=list)
    ran_stages: list[str] = field(default_factory=list)  # from `dvc status --json` before the run
    skipped_stages: list[str] = field(default_factory=list)


def dvc_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    # Prepended after `extra` is merged: callers pass whole environments (`{**os.environ, ...}`) whose PATH would
    # otherwise replace this one, and the stages would then run on whatever `python` comes first (pyenv's shim).
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class _Progress:
    """Let through a redrawn (`\\r`) line only when it moved `step` percent, or `every_s` passed without a %."""

    def __init__(self, step: float, every_s: float) -> None:
        self.step, self.every_s = step, every_s
        self.last_pct: dict[str, float] = {}
        self.last_t = 0.0

    def keep(self, line: str) -> bool:
        m = _PERCENT.search(line)
        if m is None:
            now = time.monotonic()
            if now - self.last_t >= self.every_s:
                self.last_t = now
                return True
            return False
        pct = float(m.group(1))
        label = line[: m.start()].strip()[:40]  # one bar per label: several bars may share the stream
        prev = self.last_pct.get(label)
        if prev is None or pct >= prev + self.step or (pct == 100 and prev != 100) or pct < prev:
            self.last_pct[label] = pct
            return True
        return False


def _split_stream(stream, on_segment: Callable[[str, bool], None]) -> None:
    """Read bytes; call on_segment(text, is_redraw) per `\\n`-ended line (False) or `\\r`-ended redraw (True)."""
    buf = b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        buf += chunk
        while True:
            i_n, i_r = buf.find(b"\n"), buf.find(b"\r")
            cands = [i for i in (i_n, i_r) if i >= 0]
            if not cands:
                break
            i = min(cands)
            seg, sep, buf = buf[:i], buf[i : i + 1], buf[i + 1 :]
            if sep == b"\r" and buf.startswith(b"\n"):  # a Windows-style line end is a plain line end
                sep, buf = b"\n", buf[1:]
            on_segment(seg.decode("utf-8", "replace"), sep == b"\r")
    if buf:
        on_segment(buf.decode("utf-8", "replace"), False)


def run_dvc(
    args: list[str],
    *,
    cwd: Path | str = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
    live: bool = False,
    progress_step: float = 5.0,
    progress_every_s: float = 30.0,
) -> DvcResult:
    """Run `python -m dvc <args>`. Output lines go to `on_line` (default: this module's logger), progress redraws
    thinned out; with `live=True` the output goes straight to this process's terminal instead."""
    cmd = [sys.executable, "-m", "dvc", *args]
    emit = on_line or (lambda line: log.info("%s", line))
    lines: list[str] = []
    progress = _Progress(progress_step, progress_every_s)

    def segment(text: str, redraw: bool) -> None:
        text = text.rstrip()
        if not text or (redraw and not progress.keep(text)):
            return
        lines.append(text)
        emit(text)

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=str(cwd),
        env=dvc_env(env),
        stdout=None if live else subprocess.PIPE,
        stderr=None if live else subprocess.STDOUT,
    )
    if not live:
        assert proc.stdout is not None
        _split_stream(proc.stdout, segment)
    # wait4: this child's own resource usage, including the stage process DVC waited for (not the whole tree
    # of this process, which a Prefect server or a test harness may share)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    res = DvcResult(
        args=args,
        returncode=rc,
        seconds=time.perf_counter() - t0,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        lines=lines,
    )
    if check and rc != 0:
        tail = "\n".join(lines[-40:])
        raise DvcError(f"`dvc {' '.join(args)}` failed with exit code {rc} (in {cwd}):\n{tail}")
    return res


def status(
    targets: list[str] | None = None, *, cwd: Path | str = REPO_ROOT, env: Mapping[str, str] | None = None
) -> dict[str, list]:
    """`dvc status --json`: {stage name: [what changed, ...]} for every stage that is not up to date."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", *(targets or [])],
        cwd=str(cwd),
        env=dvc_env(env),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise DvcError(
            f"`dvc status --json` failed with exit code {proc.returncode} (in {cwd}):\n{proc.stderr[-4000:]}"
        )
    out = proc.stdout.strip()
    try:
        doc = json.loads(out or "{}")
    except json.JSONDecodeError as err:
        raise DvcError(f"`dvc status --json` printed something that is not JSON: {out[:500]!r}") from err
    # Stages of a dvc.yaml outside the root are reported as `path/dvc.yaml:stage`; the name is what callers use.
    return {name.rpartition(":")[2]: changes for name, changes in doc.items()}


def stage_order(dvc_yaml: Path | str = REPO_ROOT / "dvc.yaml") -> list[str]:
    """Stage names in the order dvc.yaml declares them (which is also a valid topological order here)."""
    with open(dvc_yaml, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    return list((doc.get("stages") or {}).keys())


def repro(
    stage: str | None = None,
    *,
    cwd: Path | str = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    force: bool = False,
    live: bool = False,
    run_cache: bool = True,
) -> DvcResult:
    """`dvc repro --single-item <stage>` (upstream stages are run separately, in order, by the caller), or the
    whole pipeline when `stage` is None. Which stages ran is what `dvc status --json` said was stale before.
    `run_cache=False` makes a stale stage run its command rather than restore outputs DVC saw before (timings)."""
    targets = [stage] if stage else None
    stale = set(status(targets, cwd=cwd, env=env))
    args = ["repro"]
    if stage:
        args += ["--single-item", stage]
    if force:
        args.append("--force")
    if not run_cache:
        args.append("--no-run-cache")
    res = run_dvc(args, cwd=cwd, env=env, on_line=on_line, live=live)
    scope = [stage] if stage else stage_order(Path(cwd) / "dvc.yaml")
    res.ran_stages = [s for s in scope if force or s in stale]
    res.skipped_stages = [s for s in scope if s not in res.ran_stages]
    return res


def push(
    *, cwd: Path | str = REPO_ROOT, env: Mapping[str, str] | None = None, on_line: Callable[[str], None] | None = None
) -> DvcResult:
    return run_dvc(["push"], cwd=cwd, env=env, on_line=on_line)


def default_remote(*, cwd: Path | str = REPO_ROOT, env: Mapping[str, str] | None = None) -> str:
    """The name of the repository's default DVC remote (`core.remote`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "default"],
        cwd=str(cwd),
        env=dvc_env(env),
        capture_output=True,
        text=True,
    )
    name = proc.stdout.strip()
    if proc.returncode != 0 or not name:
        raise DvcError(f"no default DVC remote in {cwd} (`dvc remote default`: {proc.stderr.strip()[-500:]})")
    return name


def configure_remote(
    options: Mapping[str, str],
    *,
    remote: str | None = None,
    cwd: Path | str = REPO_ROOT,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write `options` (url, endpointurl, access_key_id, …) for `remote` (default: the default remote) into
    .dvc/config.local — git-ignored, so the keys and this machine's endpoint never reach a commit, and it
    overrides the committed .dvc/config option by option."""
    name = remote or default_remote(cwd=cwd, env=env)
    for key, value in options.items():
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", "remote", "modify", "--local", name, key, value],
            cwd=str(cwd),
            env=dvc_env(env),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise DvcError(f"`dvc remote modify --local {name} {key} …` failed in {cwd}: {proc.stderr[-1000:]}")
    return {"remote": name, **{k: v for k, v in options.items() if "secret" not in k}}


def s3_remote_options(settings) -> dict[str, str]:
    """DVC's remote options from the services' settings (ovt.services.ServiceSettings): the same endpoint and
    keys that boto3, MLflow and the S3 server itself use, so a moved `OVT_S3_PORT` moves DVC too."""
    return {
        "url": f"s3://{settings.dvc_bucket}/store",
        "endpointurl": settings.s3_url,
        "access_key_id": settings.access_key,
        "secret_access_key": settings.secret_key.get_secret_value(),
        "region": settings.region,
    }

"""One long-running background process owned by the project: PID file, log file, readiness, stop.

Why this is hand-written rather than delegated to each tool's own `--background` mode: the three services have
three different daemon conventions (weed has none, `mlflow server` has none, `prefect server start --background`
has its own PID file), and the project needs one behaviour for all of them: a PID file we can trust, a log we can
show when start-up fails, a stop that waits for the whole process tree, and a start that is a no-op when healthy.

Conventions:
- `<state>/run/<name>.pid` holds the decimal PID of the *parent* process. It is written only after spawn, so a
  process whose start time is later than the PID file's mtime is a different process that reused the PID
  (the file is then stale and removed).
- `<state>/logs/<name>.log` collects stdout+stderr; each start appends a header line, so restarts stay readable.
- Children are started in a new session (own process group): a Ctrl-C in the shell that ran `up` does not
  reach them, and they survive that shell.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable

import psutil

from ovt.io import atomic_write_text

log = logging.getLogger(__name__)

#: Slack between the spawn and the PID file mtime (file-system timestamp granularity, clock steps).
_PID_MTIME_SLACK_S = 2.0


class ServiceError(RuntimeError):
    """A service failed to start, stop or answer; the message says which and includes its log tail."""


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one service and how to tell that it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str
    url: str  # what a person opens / a client connects to
    ports: tuple[int, ...] = ()  # every port it binds: checked free before spawning
    cwd: Path | None = None
    # hooks: their return values are ignored
    before_start: Callable[[], object] | None = field(default=None, compare=False)  # e.g. write credentials
    after_start: Callable[[], object] | None = field(default=None, compare=False)  # e.g. create buckets
    umask: int = -1  # the child's umask; -1 keeps the caller's


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when `url` answers 2xx. Connection errors and timeouts are simply 'not ready'."""
    # An explicit no-proxy opener: an HTTP(S)_PROXY in the environment must not intercept 127.0.0.1 checks.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, n: int = 40) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=n))
    except FileNotFoundError:
        return "(no log file)"


class ManagedProcess:
    """PID-file based control of one service process."""

    def __init__(self, spec: ProcessSpec, run_dir: Path, log_dir: Path, host: str = "127.0.0.1"):
        self.spec = spec
        self.host = host
        self.pid_file = run_dir / f"{spec.name}.pid"
        self.log_file = log_dir / f"{spec.name}.log"

    # ------------------------------------------------------------------ PID file
    def pid(self) -> int | None:
        """The PID of our running process, or None. A stale or unreadable PID file is removed."""
        try:
            text = self.pid_file.read_text().strip()
            mtime = self.pid_file.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            pid = int(text)
            proc = psutil.Process(pid)
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            # A process created after our PID file was written cannot be the one we started: PID reuse.
            ours = proc.create_time() <= mtime + _PID_MTIME_SLACK_S
        except (ValueError, psutil.Error):
            alive = ours = False
        if alive and ours:
            return pid
        log.warning("%s: removing stale PID file %s (process %s is gone)", self.spec.name, self.pid_file, text)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return None

    def healthy(self) -> bool:
        return http_ok(self.spec.health_url)

    # ------------------------------------------------------------------ start
    def start(self, timeout: float) -> bool:
        """Start and wait until healthy. Returns False if it was already running and healthy (no-op)."""
        pid = self.pid()
        if pid is not None:
            # Running (perhaps still starting from another `up`): wait for health instead of spawning twice.
            self._wait_healthy(timeout, proc=None, pid=pid)
            return False
        busy = [p for p in self.spec.ports if port_in_use(self.host, p)]
        if busy:
            raise ServiceError(
                f"{self.spec.name}: port(s) {busy} on {self.host} are already in use by a process this project did "
                f"not start (no PID file at {self.pid_file}); stop it or choose other ports (OVT_*_PORT)"
            )
        # Folders are created on start only: `status` of a never-started stack must not create a state folder.
        for d in (self.pid_file.parent, self.log_file.parent, self.spec.cwd):
            if d is not None:
                d.mkdir(parents=True, exist_ok=True)
        if self.spec.before_start is not None:
            self.spec.before_start()
        with open(self.log_file, "ab") as logfh:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            logfh.write(f"\n===== {stamp} start: {' '.join(self.spec.argv)}\n".encode())
            logfh.flush()
            proc = subprocess.Popen(
                self.spec.argv,
                env=self.spec.env,
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=logfh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                umask=self.spec.umask,
            )
        atomic_write_text(self.pid_file, f"{proc.pid}\n")
        log.info("%s: started pid %d, waiting for %s", self.spec.name, proc.pid, self.spec.health_url)
        try:
            self._wait_healthy(timeout, proc=proc, pid=proc.pid)
        except BaseException:
            # Never leave a half-started service behind (also on Ctrl-C).
            self.stop(timeout=10.0)
            raise
        return True

    def _wait_healthy(self, timeout: float, proc: subprocess.Popen | None, pid: int) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if proc is not None and proc.poll() is not None:
                raise ServiceError(
                    f"{self.spec.name} exited with code {proc.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            if proc is None and not psutil.pid_exists(pid):
                raise ServiceError(
                    f"{self.spec.name} (pid {pid}) died while starting; "
                    f"last lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.spec.name} was not healthy at {self.spec.health_url} after {timeout:.0f} s; "
                    f"last lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)  # fast for weed (<1 s), gentle for the slower Python servers

    # ------------------------------------------------------------------ stop
    def stop(self, timeout: float) -> bool:
        """SIGTERM the parent, wait for the whole tree, SIGKILL what is left. Returns False if not running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            parent = psutil.Process(pid)
            # Snapshot the tree first: once the parent exits its children are reparented and hard to find
            # (the MLflow job runner's huey consumers, uvicorn workers).
            tree = [parent, *parent.children(recursive=True)]
            parent.terminate()
        except psutil.NoSuchProcess:
            tree = []
        # The parent is responsible for shutting its children down (uvicorn workers, weed's servers), so it gets
        # the whole timeout. Descendants still alive after it has exited were orphaned: they get their own
        # SIGTERM and a short grace period. Whatever remains after that is SIGKILLed.
        deadline = time.monotonic() + timeout
        psutil.wait_procs(tree[:1], timeout=timeout)
        _, alive = psutil.wait_procs(tree, timeout=0)
        if alive and tree[0] not in alive:
            for p in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.terminate()
            _, alive = psutil.wait_procs(alive, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        if alive:
            log.warning(
                "%s: %d process(es) ignored SIGTERM for %.0f s, sending SIGKILL", self.spec.name, len(alive), timeout
            )
            for p in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            _, alive = psutil.wait_procs(alive, timeout=5.0)
            if alive:
                raise ServiceError(f"{self.spec.name}: processes {[p.pid for p in alive]} survived SIGKILL")
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        log.info("%s: stopped (pid %d)", self.spec.name, pid)
        return True

    # ------------------------------------------------------------------ status
    def tree_rss(self) -> int | None:
        """Resident memory of the process and all its descendants, in bytes."""
        pid = self.pid()
        if pid is None:
            return None
        total = 0
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            for p in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
        return total

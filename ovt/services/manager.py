"""ServiceManager: bring the local stack up and down in dependency order and report its state."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from filelock import FileLock

from ovt.services.config import ServiceSettings, load_settings
from ovt.services.definitions import DEPENDS_ON, OFFLINE_ENV, SERVICE_NAMES, SPEC_BUILDERS, s3_env
from ovt.services.process import ManagedProcess, ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    url: str
    healthy: bool
    log: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StartResult:
    name: str
    started: bool  # False: it was already running and healthy (no-op)
    pid: int | None
    seconds: float  # time until healthy (0 for a no-op)


class ServiceManager:
    """Start/stop/status of S3 (SeaweedFS), MLflow and Prefect for one state folder."""

    def __init__(self, settings: ServiceSettings | None = None):
        self.settings = settings or load_settings()

    # ------------------------------------------------------------------ helpers
    def _resolve(self, names: Iterable[str] | None, with_deps: bool) -> list[str]:
        wanted = list(SERVICE_NAMES) if names is None else list(names)
        unknown = sorted(set(wanted) - set(SERVICE_NAMES))
        if unknown:
            raise ServiceError(f"unknown service(s) {unknown}; known: {', '.join(SERVICE_NAMES)}")
        if with_deps:
            for n in list(wanted):
                wanted += DEPENDS_ON[n]
        return [n for n in SERVICE_NAMES if n in set(wanted)]  # canonical order, no duplicates

    def process(self, name: str) -> ManagedProcess:
        if name not in SPEC_BUILDERS:
            raise ServiceError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")
        s = self.settings
        return ManagedProcess(SPEC_BUILDERS[name](s), run_dir=s.run_dir, log_dir=s.log_dir, host=s.host)

    def _lock(self) -> FileLock:
        # Two concurrent `up`s (a shell and a test, two terminals) must not both spawn the same service.
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.settings.run_dir / ".manager.lock"), timeout=self.settings.start_timeout_s * 3)

    # ------------------------------------------------------------------ API
    def up(self, names: Iterable[str] | None = None) -> list[StartResult]:
        """Start the named services (default all) and their dependencies, in order; no-op for healthy ones."""
        results = []
        with self._lock():
            for name in self._resolve(names, with_deps=True):
                proc = self.process(name)
                t0 = time.monotonic()
                started = proc.start(timeout=self.settings.start_timeout_s)
                if proc.spec.after_start is not None:
                    proc.spec.after_start()  # idempotent (buckets): also run when already up
                dt = time.monotonic() - t0 if started else 0.0
                log.info(
                    "%s: %s %s", name, f"healthy after {dt:.1f} s" if started else "already running", proc.spec.url
                )
                results.append(StartResult(name=name, started=started, pid=proc.pid(), seconds=round(dt, 3)))
        return results

    def down(self, names: Iterable[str] | None = None) -> list[str]:
        """Stop the named services (default all) in reverse order; returns those that were running."""
        stopped = []
        with self._lock():
            for name in reversed(self._resolve(names, with_deps=False)):
                if self.process(name).stop(timeout=self.settings.stop_timeout_s):
                    stopped.append(name)
        return stopped

    def status(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        out = []
        for name in self._resolve(names, with_deps=False):
            proc = self.process(name)
            pid = proc.pid()
            out.append(
                ServiceStatus(
                    name=name,
                    pid=pid,
                    url=proc.spec.url,
                    healthy=pid is not None and proc.healthy(),
                    log=str(proc.log_file),
                )
            )
        return out

    def client_env(self) -> dict[str, str]:
        return client_env(self.settings)


def client_env(settings: ServiceSettings | None = None) -> dict[str, str]:
    """Environment variables a client process needs to use the local stack (CLI, DVC, flows, tests).

    Merge it over os.environ for subprocesses: `subprocess.run(cmd, env={**os.environ, **client_env()})`.
    Note: PREFECT_API_URL makes Prefect clients require the server (no ephemeral fallback), so only pass this
    to processes that run while the stack is up.
    """
    s = settings or load_settings()
    env = dict(OFFLINE_ENV)
    env.update(s.env_overrides())
    env.update(s3_env(s))
    env.update(
        {
            "MLFLOW_TRACKING_URI": s.mlflow_url,
            "PREFECT_API_URL": s.prefect_api_url,
            "PREFECT_HOME": str(s.prefect_home),  # client profiles/caches in the state folder, not ~/.prefect
        }
    )
    return env


# ---------------------------------------------------------------------- module-level convenience API
def up(names: Iterable[str] | None = None, settings: ServiceSettings | None = None) -> list[StartResult]:
    return ServiceManager(settings).up(names)


def down(names: Iterable[str] | None = None, settings: ServiceSettings | None = None) -> list[str]:
    return ServiceManager(settings).down(names)


def status(names: Iterable[str] | None = None, settings: ServiceSettings | None = None) -> list[dict]:
    return [st.as_dict() for st in ServiceManager(settings).status(names)]

"""Retries with exponential back-off for calls to the MLflow server (and the S3 store behind it).

Only transient failures are retried: connection errors, timeouts and 5xx/"temporarily unavailable" answers. A 4xx
answer (bad name, missing version, bad alias) will not fix itself and is raised at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from ovt.registry.config import RetryParams

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow error codes that mean "the request itself is wrong": retrying cannot help.
_PERMANENT_CODES = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "BAD_REQUEST",
    "INVALID_STATE",
    "NOT_FOUND",
    "FEATURE_DISABLED",
}


class RegistryError(RuntimeError):
    """Registration or promotion failed; the message says which service and what state the registry is left in."""


def is_transient(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        if exc.error_code in _PERMANENT_CODES:
            return False
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests ships with mlflow
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))


def with_retries(fn: Callable[[], T], cfg: RetryParams, what: str, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn` up to `cfg.attempts` times, sleeping initial*backoff^k (capped) between transient failures."""
    delay = cfg.initial_delay_s
    for attempt in range(1, cfg.attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not is_transient(exc) or attempt == cfg.attempts:
                raise
            log.warning(
                "%s failed (attempt %d/%d): %s; retrying in %.1f s", what, attempt, cfg.attempts, _short(exc), delay
            )
            sleep(delay)
            delay = min(delay * cfg.backoff, cfg.max_delay_s)
    raise AssertionError("unreachable")  # pragma: no cover


def _short(exc: BaseException, n: int = 300) -> str:
    s = f"{type(exc).__name__}: {exc}"
    return s if len(s) <= n else s[:n] + "…"


def mlflow_http_env(cfg: RetryParams, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The MLflow client variables that make `with_retries` the one retry loop, for the process that registers or
    promotes: merge them into the environment *that process is started with* (the CLI, the flow, a stage's
    subprocess). The library never changes os.environ: the variables are process configuration, read by MLflow at
    every request, and a library editing them would change them for every thread of its caller.

    MLflow defaults to 7 retries with backoff factor 2 per request (about two minutes) and S3 uploads through the
    MLflow artifact proxy nest another layer: a dead store would be reported only after many minutes. Values
    already set in `environ` (the user's) are left out, so they win when merged.
    """
    environ = os.environ if environ is None else environ
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(cfg.request_timeout_s)),
    }
    return {k: v for k, v in wanted.items() if k not in environ}


def warn_if_nested_retries(cfg: RetryParams, environ: Mapping[str, str] | None = None) -> None:
    """Say once per call when MLflow's own per-request retries are still on (an outage then takes minutes)."""
    missing = mlflow_http_env(cfg, environ)
    if "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in missing:
        log.warning(
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES is not set: MLflow retries each request itself inside our "
            "%d attempts; start this process with ovt.registry.retry.mlflow_http_env(...) merged into its "
            "environment (the ovt CLI and the pipeline flow do)",
            cfg.attempts,
        )

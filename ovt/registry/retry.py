"""Retries with exponential back-off for calls to the MLflow server (and the S3 store behind it).

Only transient failures are retried: connection errors, timeouts and 5xx/"temporarily unavailable" answers. A 4xx
answer (bad name, missing version, bad alias) will not fix itself and is raised at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Callable, Iterator, TypeVar

from ovt.registry.config import RetryParams

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow error codes that mean "the request itself is wrong": retrying cannot help.
_PERMANENT_CODES = {
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "PERMISSION_DENIED",
    "UNAUTHENTICATED", "BAD_REQUEST", "INVALID_STATE", "NOT_FOUND", "FEATURE_DISABLED",
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


def with_retries(fn: Callable[[], T], cfg: RetryParams, what: str,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn` up to `cfg.attempts` times, sleeping initial*backoff^k (capped) between transient failures."""
    delay = cfg.initial_delay_s
    for attempt in range(1, cfg.attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not is_transient(exc) or attempt == cfg.attempts:
                raise
            log.warning("%s failed (attempt %d/%d): %s; retrying in %.1f s", what, attempt, cfg.attempts,
                        _short(exc), delay)
            sleep(delay)
            delay = min(delay * cfg.backoff, cfg.max_delay_s)
    raise AssertionError("unreachable")  # pragma: no cover


def _short(exc: BaseException, n: int = 300) -> str:
    s = f"{type(exc).__name__}: {exc}"
    return s if len(s) <= n else s[:n] + "…"


@contextlib.contextmanager
def single_layer_http_retries(cfg: RetryParams) -> Iterator[None]:
    """Switch MLflow's own urllib3 retries off for the block, so `with_retries` is the one retry loop.

    MLflow defaults to 7 retries with backoff factor 2 per request (about two minutes) and S3 uploads through the
    MLflow artifact proxy nest another layer: a dead store would be reported only after many minutes.
    User-set values win: we only fill in unset variables.
    """
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(cfg.request_timeout_s)),
    }
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)

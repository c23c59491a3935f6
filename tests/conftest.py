"""Suite-wide settings: offline, no telemetry, and a private Prefect home so tests never touch ~/.prefect."""

from __future__ import annotations

import os
import tempfile

# Before anything imports prefect / huggingface / mlflow.
_PREFECT_HOME = tempfile.mkdtemp(prefix="ovt-test-prefect-")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_HOME": _PREFECT_HOME,
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[key] = value
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole run (≈8 s to start; per-test harnesses would pay that each time)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _restore_environ():
    """Every test leaves os.environ as it found it. Code under test exports settings on purpose (`ovt` commands and
    the promote flow put the services' client settings in os.environ for their own children), and a service URL
    left behind by a test whose stack has since stopped would send later tests' MLflow calls into minutes of
    retries against a dead port."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)

"""`python -m ovt.services`: the commands the infra/local scripts call."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ovt.services.__main__ import app
from ovt.services.testing import free_port_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stopped_env(tmp_path):
    """Environment for a stack that is not running (free ports, empty state folder)."""
    return free_port_settings(tmp_path).env_overrides()


def test_status_of_a_stopped_stack(stopped_env):
    r = CliRunner().invoke(app, ["status", "--json"], env=stopped_env)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == ["s3", "mlflow", "prefect"]
    assert not any(row["healthy"] or row["pid"] for row in rows)
    assert CliRunner().invoke(app, ["status", "--check"], env=stopped_env).exit_code == 1


def test_status_check_of_the_running_s3(stack):
    env = stack.settings.env_overrides()
    r = CliRunner().invoke(app, ["status", "s3", "--json", "--check"], env=env)
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["healthy"] and row["pid"] == stack.status(["s3"])[0].pid


def test_env_prints_sourceable_exports(stopped_env):
    r = CliRunner().invoke(app, ["env"], env=stopped_env)
    assert r.exit_code == 0
    # eval it in a real shell and read a variable back
    sh = subprocess.run(
        ["bash", "-c", f'{r.stdout}\necho "$MLFLOW_TRACKING_URI $PREFECT_API_URL"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sh.stdout.strip() == (
        f"http://127.0.0.1:{stopped_env['OVT_MLFLOW_PORT']} http://127.0.0.1:{stopped_env['OVT_PREFECT_PORT']}/api"
    )


def test_errors_are_clear_and_nonzero(stopped_env):
    r = CliRunner().invoke(app, ["up", "minio"], env=stopped_env)
    assert r.exit_code == 1 and "unknown service(s) ['minio']" in r.output
    r = CliRunner().invoke(app, ["status"], env={**stopped_env, "OVT_S3_PORT": "not-a-port"})
    assert r.exit_code == 2 and "s3_port" in r.output


def test_module_entry_point_and_down_of_nothing(stopped_env):
    env = {**os.environ, **stopped_env}
    out = subprocess.run(
        [sys.executable, "-m", "ovt.services", "down"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "nothing was running" in out.stderr

"""`ovt schedule start|stop|status|serve`: the scheduled deployment (flows/deploy.py) served in the background.

The serving process is a managed process of the services' own process manager (PID file, log, health URL, stop
with SIGTERM then SIGKILL), like the services themselves: one way to run and stop a background process.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import typer

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEDULE_NAME = "schedule"  # <state>/run/schedule.pid, <state>/logs/schedule.log

app = typer.Typer(
    help="The scheduled deployment of the full pipeline (flow.serve), stopped by `ovt down`.", no_args_is_help=True
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _managed(settings=None, port: int | None = None, argv: list[str] | None = None, env: dict | None = None):
    from ovt.services import load_settings
    from ovt.services.process import ManagedProcess, ProcessSpec

    s = settings or load_settings()
    port = port or 0
    spec = ProcessSpec(
        name=SCHEDULE_NAME,
        argv=argv or [],
        env=env or {},
        cwd=REPO_ROOT,
        health_url=f"http://127.0.0.1:{port}/health",
        url=f"{s.prefect_url}/deployments",
        ports=(port,) if port else (),
    )
    return ManagedProcess(spec, s.run_dir, s.log_dir)


def start_schedule(
    params_path: str = "params.yaml",
    interval_s: float | None = None,
    parameters: dict | None = None,
    settings=None,
    timeout_s: float = 120.0,
) -> dict:
    """Start the serving runner in the background (no-op when one is running); needs the Prefect server up."""
    import os

    from ovt.services import ServiceManager, client_env

    mgr = ServiceManager(settings)
    s = mgr.settings
    prefect = {st.name: st for st in mgr.status(["prefect"])}.get("prefect")
    if prefect is None or not prefect.healthy:
        raise RuntimeError("the Prefect server is not running: start it with `ovt up` before starting the schedule")
    existing = _managed(s)
    if existing.pid() is not None:
        return {"started": False, "pid": existing.pid(), "log": str(existing.log_file)}
    port = _free_port()
    argv = [sys.executable, "-m", "cli.app", "schedule", "serve", "--params", params_path]
    if interval_s:
        argv += ["--interval", str(interval_s)]
    if parameters:
        argv += ["--parameters", json.dumps(parameters)]
    # The child's environment is built here and passed on; this process's own environment stays untouched.
    env = {
        **os.environ,
        **client_env(s),
        "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
        "PREFECT_RUNNER_SERVER_PORT": str(port),
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = _managed(s, port, argv, env)
    proc.start(timeout_s)
    return {"started": True, "pid": proc.pid(), "log": str(proc.log_file), "ui": proc.spec.url}


def stop_schedule(settings=None, timeout_s: float = 20.0) -> bool:
    """Stop the background runner if there is one (SIGTERM, then SIGKILL after `timeout_s`). Used by `ovt down`."""
    return _managed(settings).stop(timeout_s)


def schedule_status(settings=None) -> dict:
    proc = _managed(settings)
    return {
        "running": proc.pid() is not None,
        "pid": proc.pid(),
        "pid_file": str(proc.pid_file),
        "log": str(proc.log_file),
    }


@app.command("start")
def start(
    interval: float | None = typer.Option(
        None, help="seconds between runs (default: the cron in params.yaml registry.schedule)"
    ),
    params_path: str = typer.Option("params.yaml", "--params"),
) -> None:
    """Start serving the scheduled deployment in the background (PID file in the state folder)."""
    from ovt.config import ParamsError, load_params
    from ovt.entry import exit_params_error

    try:  # a bad params file fails here, one line per key, not hours later in a scheduled run
        load_params(params_path)
    except ParamsError as err:
        exit_params_error(err)
    typer.echo(json.dumps(start_schedule(params_path, interval_s=interval), default=str))


@app.command("stop")
def stop() -> None:
    """Stop the schedule's serving process."""
    typer.echo("stopped" if stop_schedule() else "not running")


@app.command("status")
def status() -> None:
    typer.echo(json.dumps(schedule_status(), default=str))


@app.command("serve")
def serve(
    params_path: str = typer.Option("params.yaml", "--params"),
    interval: float | None = typer.Option(None, help="seconds; overrides the cron in params"),
    parameters: str | None = typer.Option(None, help="JSON of extra flow parameters"),
) -> None:
    """Run the schedule in the foreground until SIGTERM/Ctrl-C (what `start` runs in the background)."""
    from flows.deploy import serve as serve_deployment

    serve_deployment(params_path, interval, json.loads(parameters) if parameters else None)

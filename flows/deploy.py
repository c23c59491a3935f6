"""The scheduled deployment of the whole pipeline, and one command to start/stop it locally.

    python -m flows.deploy start [--interval 60]   # background `flow.serve` runner; PID in .state/run/schedule.pid
    python -m flows.deploy status
    python -m flows.deploy stop                     # also done by `ovt down`
    python -m flows.deploy serve                    # the same runner in the foreground (Ctrl-C stops it)

The scheduled flow: services check -> `dvc repro` stage by stage -> `dvc push` -> register -> promote. The register
stage is the last DVC stage, so `dvc repro` runs it; the gate runs after the push (it changes only registry aliases).

Why `flow.serve` rather than a work pool for the local schedule: the serving process is also the worker, so one
PID covers it, and it stops on the first SIGTERM (a `prefect worker` needs two: offline-stack.md §5.5 #8).
`prefect.yaml` holds the same deployment for a process work pool (`prefect --no-prompt deploy --all`) and
infra/production/ the cluster variants. One run at a time in both: the deployment's concurrency limit is 1 (DVC
holds one repository lock) and the local runner takes at most one run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task

from flows.pipeline import pipeline, services_check
from flows.promote import load_register_params, promote_flow, tracking_env

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEDULE_NAME = "schedule"  # <state>/run/schedule.pid, <state>/logs/schedule.log
FLOW_NAME = "ovt-scheduled-pipeline"
REQUIRED = ["s3", "mlflow"]


@task(name="register-outside-dvc", retries=1, retry_delay_seconds=15)
def register_task(params_path: str) -> dict:
    """Only when dvc.yaml has no `register` stage (e.g. a pipeline cut short for debugging)."""
    from ovt.registry.register import register

    cfg = load_register_params(params_path)
    reg = register(cfg, root=REPO_ROOT, models_dir=REPO_ROOT / "models", eval_dir=REPO_ROOT / "data" / "eval")
    return reg.to_json()


@flow(name=FLOW_NAME, log_prints=True)
def scheduled_pipeline(params_path: str = "params.yaml", stages: Optional[list[str]] = None, push: bool = True,
                       promote: bool = True, required_services: Optional[list[str]] = None,
                       dry_run: bool = False) -> dict:
    """The whole pipeline, as the scheduled deployment runs it. `dry_run` checks the services and reports the plan
    without running DVC (used to test that the schedule fires)."""
    from ovt import pipeline as dvcrun

    logger = get_run_logger()
    env = tracking_env()
    # Fail fast with the service named, before DVC takes its lock or anything is half-done.
    services_check(required_services if required_services is not None else REQUIRED)
    order = dvcrun.stage_order() if (REPO_ROOT / "dvc.yaml").exists() else []
    plan = {"stages": stages or order, "push": push, "promote": promote,
            "register_in_dvc": "register" in order}
    if dry_run:
        logger.info("dry run: %s", json.dumps(plan))
        return {"dry_run": True, "plan": plan}
    summary = pipeline(stages=stages, do_push=push, check_services=False, env={**os.environ, **env})
    reg = None if "register" in order else register_task(params_path)
    decision = promote_flow(params_path) if promote else None
    return {"pipeline": summary, "register": reg, "promote": decision}


# ------------------------------------------------------------------------------------------------ serving

def serve(params_path: str = "params.yaml", interval_s: Optional[float] = None,
          parameters: Optional[dict] = None) -> None:
    """Create/update the deployment and run the schedule in this process until SIGTERM/Ctrl-C."""
    from prefect.schedules import Cron, Interval

    cfg = load_register_params(params_path).schedule
    every = interval_s or cfg.interval_s
    schedule = Interval(every) if every else Cron(cfg.cron, timezone=cfg.timezone)
    scheduled_pipeline.serve(
        name=cfg.deployment_name, schedules=[schedule],
        parameters={"params_path": params_path, "push": cfg.push, **(parameters or {})},
        global_limit=1,   # deployment concurrency limit: one pipeline run at a time, server-side
        limit=1,          # and this runner never starts a second run itself
        tags=["ovt", "pipeline"], description=__doc__.splitlines()[0],
        webserver=True,   # /health for `start` and `status`
        pause_on_shutdown=True,  # a stopped schedule does not pile up late runs for the next start
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
    spec = ProcessSpec(name=SCHEDULE_NAME, argv=argv or [], env=env or {}, cwd=REPO_ROOT,
                       health_url=f"http://127.0.0.1:{port}/health", url=f"{s.prefect_url}/deployments",
                       ports=(port,) if port else ())
    return ManagedProcess(spec, s.run_dir, s.log_dir)


def start_schedule(params_path: str = "params.yaml", interval_s: Optional[float] = None,
                   parameters: Optional[dict] = None, settings=None, timeout_s: float = 120.0) -> dict:
    """Start the serving runner in the background (no-op when one is running); needs the Prefect server up."""
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
    argv = [sys.executable, "-m", "flows.deploy", "serve", "--params", params_path]
    if interval_s:
        argv += ["--interval", str(interval_s)]
    if parameters:
        argv += ["--parameters", json.dumps(parameters)]
    env = {**os.environ, **client_env(s), "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
           "PREFECT_RUNNER_SERVER_PORT": str(port), "PYTHONPATH": str(REPO_ROOT)}
    proc = _managed(s, port, argv, env)
    proc.start(timeout_s)
    return {"started": True, "pid": proc.pid(), "log": str(proc.log_file), "ui": proc.spec.url}


def stop_schedule(settings=None, timeout_s: float = 20.0) -> bool:
    """Stop the background runner if there is one (SIGTERM, then SIGKILL after `timeout_s`). Used by `ovt down`."""
    return _managed(settings).stop(timeout_s)


def schedule_status(settings=None) -> dict:
    proc = _managed(settings)
    return {"running": proc.pid() is not None, "pid": proc.pid(), "pid_file": str(proc.pid_file),
            "log": str(proc.log_file)}


def _cli() -> None:
    import typer

    app = typer.Typer(add_completion=False, help="The scheduled OVT pipeline deployment (flow.serve).")

    @app.command("start")
    def _start(params: str = "params.yaml", interval: Optional[float] = typer.Option(None, help="seconds; "
               "overrides the cron in params (registry.schedule)")) -> None:
        typer.echo(json.dumps(start_schedule(params, interval)))

    @app.command("stop")
    def _stop() -> None:
        typer.echo("stopped" if stop_schedule() else "not running")

    @app.command("status")
    def _status() -> None:
        typer.echo(json.dumps(schedule_status()))

    @app.command("serve")
    def _serve(params: str = "params.yaml", interval: Optional[float] = None,
               parameters: Optional[str] = typer.Option(None, help="JSON of extra flow parameters")) -> None:
        serve(params, interval, json.loads(parameters) if parameters else None)

    app()


if __name__ == "__main__":
    _cli()

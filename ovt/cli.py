"""`ovt`: the command line. Thin: every command calls the library, the Prefect flows or DVC.

Imports are lazy so that `ovt --help` and `ovt status` stay fast (torch, prefect and mlflow take seconds to import).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ovt.services import __main__ as svc

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Omniview-Tuning pipeline: services, DVC stages, Prefect flows, MLflow registry.")
console = Console(stderr=True)

STAGES = ["acquire", "render", "caption", "bootstrap", "train", "evaluate", "register"]


def _check_params(path: Path = Path("params.yaml")):
    """Validate params.yaml before anything runs: a bad key is one line each and exit 2, not a failed stage."""
    from ovt.config import ParamsError, load_params
    from ovt.entry import exit_params_error

    try:
        return load_params(path)
    except ParamsError as err:
        exit_params_error(err)


def _client_env(params=None) -> dict[str, str]:
    from ovt.services import client_env

    env = client_env()
    if params is not None:  # MLflow's own per-request retries off: the registry's retry loop is the only one
        from ovt.registry.retry import mlflow_http_env

        env.update(mlflow_http_env(params.registry.retry))
    os.environ.update(env)  # this process (flows, mlflow clients) and its children see the same settings
    return env


# Service commands are the services package's own typer commands (also `python -m ovt.services`).
app.command()(svc.up)
app.command()(svc.status)
app.command()(svc.env)
app.command()(svc.logs)


@app.command()
def down(names: svc.Names = None) -> None:
    """Stop a running schedule (if any), then the services in reverse order."""
    if not names:
        try:
            from flows.deploy import stop_schedule
        except ImportError:  # the deployment module is optional in a trimmed install
            stop_schedule = None
        if stop_schedule is not None:
            stop_schedule()
    svc.down(names)


@app.command()
def run(stage: Optional[List[str]] = typer.Option(None, "--stage", "-s", help="only these stages (repeatable)"),
        push: bool = typer.Option(True, help="dvc push at the end"),
        promote: bool = typer.Option(True, help="run the MLflow promotion gate at the end"),
        start_services: bool = typer.Option(True, "--up/--no-up", help="start the local services first")) -> None:
    """The whole pipeline as a Prefect flow on the local server: services check, dvc repro stage by stage,
    dvc push, MLflow register (the last DVC stage) and the promotion gate."""
    p = _check_params()
    if start_services:
        from ovt.services import up as services_up

        services_up(None)
    _client_env(p)
    from flows.deploy import scheduled_pipeline

    summary = scheduled_pipeline(stages=stage or None, push=push, promote=promote)
    console.print_json(json.dumps(summary, default=str))


@app.command()
def repro(stage: Optional[str] = typer.Argument(None, help=f"one of {', '.join(STAGES)} (default: all)"),
          force: bool = typer.Option(False, help="run even if nothing changed")) -> None:
    """`dvc repro` without Prefect (with the local services' client settings)."""
    from ovt import pipeline as dvcrun

    env = _client_env(_check_params())
    try:
        res = dvcrun.repro(stage, env=env, force=force, on_line=lambda line: typer.echo(line, err=True))
    except dvcrun.DvcError as err:  # dvc's own output was streamed above: one line, no traceback
        console.print(str(err).splitlines()[0], markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(f"ran: {res.ran_stages or 'nothing'}; up to date: {res.skipped_stages or '-'}")


@app.command()
def promote(params_path: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    """Promotion gate: move `champion` to the `challenger` version only when it beats the champion."""
    p = _check_params(params_path)
    _client_env(p)
    from ovt.registry.promote import promote as run_gate

    typer.echo(json.dumps(run_gate(p.registry).to_json(), indent=2, default=str))


schedule_app = typer.Typer(help="The scheduled deployment of the full pipeline (flow.serve), stopped by `ovt down`.",
                           no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("start")
def schedule_start(interval: Optional[float] = typer.Option(None, help="seconds between runs (default: the cron "
                                                                       "in params.yaml registry.schedule)"),
                   params_path: str = typer.Option("params.yaml", "--params")) -> None:
    """Start serving the scheduled deployment in the background (PID file in the state folder)."""
    _check_params(Path(params_path))
    _client_env()
    from flows.deploy import start_schedule

    typer.echo(json.dumps(start_schedule(params_path, interval_s=interval), default=str))


@schedule_app.command("stop")
def schedule_stop() -> None:
    """Stop the schedule's serving process."""
    from flows.deploy import stop_schedule

    typer.echo("stopped" if stop_schedule() else "not running")


@schedule_app.command("status")
def schedule_status() -> None:
    from flows.deploy import schedule_status as st

    typer.echo(json.dumps(st(), default=str))


@app.command()
def params(path: Path = typer.Option(Path("params.yaml"), help="params file to validate")) -> None:
    """Validate params.yaml against the schema and print the effective values."""
    p = _check_params(path)
    typer.echo(json.dumps(p.model_dump(mode="json"), indent=2))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()

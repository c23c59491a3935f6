"""`ovt`: the command line. Thin: every command calls the library, the Prefect flows or DVC.

Imports are lazy so that `ovt --help` and `ovt params` stay fast (torch, prefect and mlflow take seconds to import;
benchmarks/cli_startup.py measures it). Settings reach child processes as environment dicts; this process's own
`os.environ` is never changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli import schedule

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Omniview-Tuning pipeline: services, DVC stages, Prefect flows, MLflow registry.",
)
console = Console(stderr=True)
REPO_ROOT = Path(__file__).resolve().parent.parent
SUMMARY_PREFIX = "OVT_SUMMARY "  # flows.pipeline prints its summary after this (not imported: prefect is slow)


def _check_params(path: Path = Path("params.yaml")):
    """Validate params.yaml before anything runs: a bad key is one line each and exit 2, not a failed stage."""
    from ovt.config import ParamsError, load_params
    from ovt.entry import exit_params_error

    try:
        return load_params(path)
    except ParamsError as err:
        exit_params_error(err)


def _client_env(params=None) -> dict[str, str]:
    """This process's environment plus the local services' client settings, for a child process; with `params`,
    MLflow's own per-request retries are off so the registry's retry loop is the only one."""
    from ovt.services import client_env

    env = {**os.environ, **client_env()}
    if params is not None:
        from ovt.registry.retry import mlflow_http_env

        env.update(mlflow_http_env(params.registry.retry, environ=env))
    return env


# Service commands call the services package's own commands (also `python -m ovt.services`), imported only when
# one runs: the settings model behind them costs a third of `ovt --help`'s start-up.
SERVICE_NAMES = ("s3", "mlflow", "prefect")  # ovt.services.definitions.SERVICE_NAMES (tests/test_layers.py)
Names = Annotated[list[str] | None, typer.Argument(help=f"services (default all): {', '.join(SERVICE_NAMES)}")]
app.add_typer(schedule.app, name="schedule")


def _svc():
    from ovt.services import __main__ as svc

    return svc


@app.command()
def up(names: Names = None) -> None:
    """Start services (and their dependencies) in order; a healthy service is left alone."""
    _svc().up(names)


@app.command()
def status(
    names: Names = None,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    check: bool = typer.Option(False, "--check", help="exit 1 unless every service is healthy"),
) -> None:
    """Show pid, url, health and log file of each service."""
    _svc().status(names, as_json=as_json, check=check)


@app.command()
def env() -> None:
    """Print `export` lines for clients: eval "$(ovt env)"."""
    _svc().env()


@app.command()
def logs(
    name: str = typer.Argument(..., help="service name"), lines: int = typer.Option(40, "-n", help="number of lines")
) -> None:
    """Print the last lines of a service's log."""
    _svc().logs(name, lines=lines)


@app.command()
def down(names: Names = None) -> None:
    """Stop a running schedule (if any), then the services in reverse order."""
    if not names:
        schedule.stop_schedule()
    _svc().down(names)


@app.command()
def remote(cwd: Path = typer.Option(REPO_ROOT, "--repo", help="the DVC repository")) -> None:
    """Point DVC's default remote at the local S3 of the services' settings (OVT_S3_PORT, AWS_* keys): writes
    .dvc/config.local, git-ignored. `ovt run` and scripts/setup.sh run it, so DVC follows a moved port."""
    from ovt import dvc_driver
    from ovt.services import load_settings

    typer.echo(json.dumps(dvc_driver.configure_remote(dvc_driver.s3_remote_options(load_settings()), cwd=cwd)))


@app.command()
def run(
    stage: list[str] | None = typer.Option(None, "--stage", "-s", help="only these stages (repeatable)"),
    push: bool = typer.Option(True, help="dvc push at the end"),
    register: bool = typer.Option(True, help="register the trained variant in MLflow after dvc repro"),
    promote: bool = typer.Option(True, help="run the MLflow promotion gate at the end"),
    start_services: bool = typer.Option(True, "--up/--no-up", help="start the local services first"),
    run_cache: bool = typer.Option(
        True,
        help="let DVC restore outputs of a stage run it has seen before "
        "(--no-run-cache: run every stale stage's command)",
    ),
) -> None:
    """The whole pipeline as a Prefect flow on the local server: services check, dvc repro stage by stage,
    dvc push, MLflow register and the promotion gate. Prints the run summary (per-stage times) as JSON."""
    from ovt import dvc_driver
    from ovt.services import load_settings

    p = _check_params()
    if start_services:
        from ovt.services import up as services_up

        services_up(None)
    dvc_driver.configure_remote(dvc_driver.s3_remote_options(load_settings()), cwd=REPO_ROOT)
    params = {
        "stages": stage or None,
        "do_push": push,
        "do_register": register,
        "do_promote": promote,
        "repo": str(REPO_ROOT),
        "run_cache": run_cache,
    }
    # The flow runs in its own process with the services' settings in its environment (the registry clients
    # read theirs from there); its output streams to this terminal, its summary is the line after the prefix.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.pipeline", json.dumps(params)],
        cwd=REPO_ROOT,
        env=_client_env(p),
        stdout=subprocess.PIPE,
        text=True,
    )
    summary = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
        else:
            sys.stderr.write(line)
    if proc.wait() != 0 or summary is None:
        console.print(f"[red]the pipeline flow failed (exit code {proc.returncode})[/]")
        raise typer.Exit(proc.returncode or 1)
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def repro(
    stage: str | None = typer.Argument(None, help="one stage of dvc.yaml (default: all)"),
    force: bool = typer.Option(False, help="run even if nothing changed"),
) -> None:
    """`dvc repro` without Prefect (with the local services' client settings), live progress in the terminal."""
    from ovt import dvc_driver

    env = _client_env(_check_params())
    try:
        res = dvc_driver.repro(stage, env=env, force=force, live=True)
    except dvc_driver.DvcError as err:  # dvc's own output was streamed above: one line, no traceback
        console.print(str(err).splitlines()[0], markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(f"ran: {res.ran_stages or 'nothing'}; up to date: {res.skipped_stages or '-'}")


@app.command()
def promote(params_path: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    """Promotion gate: move `champion` to the `challenger` version only when it beats the champion."""
    from mlflow import MlflowClient

    from ovt.registry.promote import promote as run_gate
    from ovt.services import client_env

    p = _check_params(params_path)
    uri = client_env()["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    typer.echo(json.dumps(run_gate(p.registry, client=client).to_json(), indent=2, default=str))


@app.command()
def report(
    check: bool = typer.Option(
        False, "--check", help="fail when README.md differs from what the committed results render to; change nothing"
    ),
    readme: Path = typer.Option(REPO_ROOT / "README.md", help="the file with the generated sections"),
) -> None:
    """Rewrite README.md's generated sections (results, pipeline times, benchmarks) from the committed files."""
    from ovt.report import DOCUMENTS, ReportError, render_readme

    try:
        changed = render_readme(readme, root=REPO_ROOT, check=check)
        for doc, renderers in DOCUMENTS.items():
            changed += [
                f"{doc}:{n}" for n in render_readme(REPO_ROOT / doc, root=REPO_ROOT, check=check, renderers=renderers)
            ]
    except ReportError as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(2)
    if check and changed:
        console.print(f"[red]{readme} is out of date in: {', '.join(changed)} — run `ovt report`[/]")
        raise typer.Exit(1)
    console.print(f"{'checked' if check else 'updated'}: {', '.join(changed) or 'nothing to change'}")


@app.command()
def sweep(
    spec: Path = typer.Argument(Path("experiments/validation_sweep.yaml"), help="the sweep spec (YAML)"),
    out: Path = typer.Option(None, help="results JSON (default: the spec's path with .json)"),
) -> None:
    """Run a validation sweep: one `dvc exp run -S …` per grid point (resumes), validation metrics into a JSON that
    `ovt report` renders into docs/experiments.md; prints the point the spec's rule selects."""
    from ovt.sweep import load_spec, run_sweep

    _check_params()
    s = load_spec(spec)
    doc = run_sweep(s, out or spec.with_suffix(".json"), cwd=Path.cwd())
    console.print_json(json.dumps({"sweep": s.name, "points": len(doc["points"]), "selected": doc.get("selected")}))


@app.command()
def params(path: Path = typer.Option(Path("params.yaml"), help="params file to validate")) -> None:
    """Validate params.yaml against the schema and print the effective values."""
    p = _check_params(path)
    typer.echo(json.dumps(p.model_dump(mode="json"), indent=2))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()

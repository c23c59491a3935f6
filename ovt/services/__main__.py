"""`python -m ovt.services up|down|status|env|logs`: the local stack without the `ovt` CLI (infra/local/*.sh)."""

from __future__ import annotations

import json
import logging
import shlex
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ovt.services.config import ServiceConfigError
from ovt.services.definitions import SERVICE_NAMES
from ovt.services.manager import ServiceManager
from ovt.services.process import ServiceError, tail

app = typer.Typer(
    help="Local S3 (SeaweedFS), MLflow and Prefect services, bound to 127.0.0.1.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

Names = Annotated[list[str] | None, typer.Argument(help=f"services (default all): {', '.join(SERVICE_NAMES)}")]


def _manager() -> ServiceManager:
    try:
        return ServiceManager()
    except ServiceConfigError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


def _fail(e: Exception) -> None:
    err.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
    raise typer.Exit(1) from None


@app.command()
def up(names: Names = None) -> None:
    """Start services (and their dependencies) in order; a healthy service is left alone."""
    mgr = _manager()
    try:
        for r in mgr.up(names):
            what = f"started in {r.seconds:.1f} s" if r.started else "already running"
            err.print(f"{r.name:8} {what:20} pid {r.pid}")
    except ServiceError as e:
        _fail(e)
    _print_status(mgr, names)


@app.command()
def down(names: Names = None) -> None:
    """Stop services in reverse order and wait until their processes have exited."""
    mgr = _manager()
    try:
        stopped = mgr.down(names)
    except ServiceError as e:
        _fail(e)
    err.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def _print_status(mgr: ServiceManager, names: list[str] | None) -> bool:
    table = Table("service", "pid", "url", "healthy", "log")
    rows = mgr.status(names)
    for st in rows:
        table.add_row(
            st.name, str(st.pid or "-"), st.url, "[green]yes[/green]" if st.healthy else "[red]no[/red]", st.log
        )
    Console().print(table)
    return all(st.healthy for st in rows)


@app.command()
def status(
    names: Names = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    check: Annotated[bool, typer.Option("--check", help="exit 1 unless every service is healthy")] = False,
) -> None:
    """Show pid, url, health and log file of each service."""
    mgr = _manager()
    if as_json:
        rows = [st.as_dict() for st in mgr.status(names)]
        typer.echo(json.dumps(rows, indent=2))
        ok = all(r["healthy"] for r in rows)
    else:
        ok = _print_status(mgr, names)
    if check and not ok:
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print `export` lines for clients: eval "$(python -m ovt.services env)"."""
    for k, v in sorted(_manager().client_env().items()):
        typer.echo(f"export {k}={shlex.quote(v)}")


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="service name")],
    lines: Annotated[int, typer.Option("-n", help="number of lines")] = 40,
) -> None:
    """Print the last lines of a service's log."""
    try:
        proc = _manager().process(name)
    except ServiceError as e:
        _fail(e)
    typer.echo(tail(proc.log_file, lines), nl=False)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()

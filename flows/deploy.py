"""The scheduled deployment of the whole pipeline: the flow a schedule runs, and `serve()` which runs the schedule.

The scheduled flow: services check -> `dvc repro` stage by stage -> `dvc push` -> register -> promote (all in
flows/pipeline.py). Starting, stopping and inspecting the background serving process is the CLI's job
(`ovt schedule start|stop|status`, cli/schedule.py, on the services' process manager); this module only defines
what runs.

Why `flow.serve` rather than a work pool for the local schedule: the serving process is also the worker, so one
PID covers it, and it stops on the first SIGTERM (a `prefect worker` needs two). `prefect.yaml` holds the same
deployment for a process work pool (`prefect --no-prompt deploy --all`) and infra/production/ the cluster variants.
One run at a time in both: the deployment's concurrency limit is 1 (DVC holds one repository lock) and the local
runner takes at most one run.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger

from flows.pipeline import pipeline, services_check
from flows.promote import load_register_params, tracking_env

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOW_NAME = "ovt-scheduled-pipeline"
REQUIRED = ["s3", "mlflow"]


@flow(name=FLOW_NAME, log_prints=True)
def scheduled_pipeline(
    params_path: str = "params.yaml",
    stages: list[str] | None = None,
    push: bool = True,
    promote: bool = True,
    required_services: list[str] | None = None,
    dry_run: bool = False,
) -> dict:
    """The whole pipeline, as the scheduled deployment runs it. `dry_run` checks the services and reports the plan
    without running DVC (used to test that the schedule fires)."""
    from ovt import dvc_driver

    logger = get_run_logger()
    env = tracking_env()
    # Fail fast with the service named, before DVC takes its lock or anything is half-done.
    services_check(required_services if required_services is not None else REQUIRED)
    order = dvc_driver.stage_order(REPO_ROOT / "dvc.yaml") if (REPO_ROOT / "dvc.yaml").exists() else []
    plan = {"stages": stages or order, "push": push, "register": True, "promote": promote}
    if dry_run:
        logger.info("dry run: %s", json.dumps(plan))
        return {"dry_run": True, "plan": plan}
    return pipeline(
        stages=stages,
        do_push=push,
        check_services=False,
        env=env,
        repo=str(REPO_ROOT),
        do_register=True,
        do_promote=promote,
        params_path=params_path,
    )


def serve(params_path: str = "params.yaml", interval_s: float | None = None, parameters: dict | None = None) -> None:
    """Create/update the deployment and run the schedule in this process until SIGTERM/Ctrl-C."""
    from prefect.schedules import Cron, Interval

    cfg = load_register_params(params_path).schedule
    every = interval_s or cfg.interval_s
    schedule = Interval(every) if every else Cron(cfg.cron, timezone=cfg.timezone)
    scheduled_pipeline.serve(
        name=cfg.deployment_name,
        schedules=[schedule],
        parameters={"params_path": params_path, "push": cfg.push, **(parameters or {})},
        global_limit=1,  # deployment concurrency limit: one pipeline run at a time, server-side
        limit=1,  # and this runner never starts a second run itself
        tags=["ovt", "pipeline"],
        description=(__doc__ or "").splitlines()[0],
        webserver=True,  # /health for `ovt schedule start` and `status`
        pause_on_shutdown=True,  # a stopped schedule does not pile up late runs for the next start
    )

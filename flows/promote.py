"""The promotion gate as a Prefect flow: challenger vs champion in the MLflow registry (ovt.registry.promote).

Orchestration only; the decision logic lives in ovt/registry/promote.py. Run with `ovt promote` or
`python -m flows.promote`; the scheduled pipeline (flows/deploy.py) calls it after `dvc push`.
"""

from __future__ import annotations

import os

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact


def tracking_env() -> dict[str, str]:
    """Point MLflow at the local server unless the caller already chose one (remote MLflow in production)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return {}
    from ovt.services import client_env

    # Never PREFECT_*: this runs inside a flow run that already talks to its Prefect API.
    env = {k: v for k, v in client_env().items() if k not in os.environ and not k.startswith("PREFECT_")}
    os.environ.update(env)
    return env


def load_register_params(params_path: str):
    from ovt.config import load_params

    return load_params(params_path).registry


# The gate retries its own MLflow calls with back-off; one task-level retry covers a server restart in between.
@task(name="promotion-gate", retries=1, retry_delay_seconds=15)
def run_gate(params_path: str) -> dict:
    from ovt.registry.promote import promote

    logger = get_run_logger()
    tracking_env()
    decision = promote(load_register_params(params_path))
    logger.info("gate: %s (challenger v%s, champion v%s -> v%s)%s", decision.action, decision.challenger,
                decision.champion_before, decision.champion_after,
                "; " + "; ".join(decision.gate.reasons) if decision.gate and decision.gate.reasons else "")
    return decision.to_json()


@flow(name="ovt-promote", log_prints=True)
def promote_flow(params_path: str = "params.yaml") -> dict:
    """Compare `challenger` with `champion`; move `champion` only when the gate passes."""
    d = run_gate(params_path)
    rows = ""
    if d.get("gate"):
        rows = "\n".join(f"| {k} | {c['challenger']} | {c['champion']} | {c['delta']:+} | {c['required']:+} | "
                         f"{'ok' if c['ok'] else 'FAIL'} |" for k, c in d["gate"]["checks"].items())
        rows = "| metric | challenger | champion | delta | required | |\n|---|---|---|---|---|---|\n" + rows
    create_markdown_artifact(
        key="ovt-promotion-gate",
        markdown=(f"# Promotion gate: {d['action']}\n\nmodel `{d['name']}`: challenger v{d['challenger']}, "
                  f"champion v{d['champion_before']} -> v{d['champion_after']}\n\n{rows}\n\n"
                  + "\n".join(f"- {r}" for r in ((d.get('gate') or {}).get('reasons') or []))),
        description="Challenger vs champion on the held-out metrics")
    return d


if __name__ == "__main__":
    import sys

    promote_flow(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")

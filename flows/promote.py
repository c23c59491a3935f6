"""The promotion gate as a Prefect flow: challenger vs champion in the MLflow registry (ovt.registry.promote).

Orchestration only; the decision logic lives in ovt/registry/promote.py. The pipeline flow runs the gate as its
last task (flows/pipeline.py); this flow is the gate on its own (`python -m flows.promote`, the `promote`
deployment in prefect.yaml).
"""

from __future__ import annotations

import os

from prefect import flow
from prefect.artifacts import create_markdown_artifact


def tracking_env() -> dict[str, str]:
    """The local services' client settings, for a flow started without them (a work-pool worker started from a
    plain shell). Empty when the caller already chose a server (MLFLOW_TRACKING_URI set: `ovt run`, production).

    Returned, never applied to this process: the registry calls take the tracking URI as an argument and the DVC
    subprocesses get the dict as their environment (never PREFECT_*: the flow run already talks to its Prefect API).
    The MLflow server proxies artifacts, so the tracking URI is all a registry client needs."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return {}
    from ovt.services import client_env

    return {k: v for k, v in client_env().items() if k not in os.environ and not k.startswith("PREFECT_")}


def load_register_params(params_path: str):
    from ovt.config import load_params

    return load_params(params_path).registry


@flow(name="ovt-promote", log_prints=True)
def promote_flow(params_path: str = "params.yaml") -> dict:
    """Compare `challenger` with `champion`; move `champion` only when the gate passes."""
    from pathlib import Path

    from flows.pipeline import promote

    path = Path(params_path)
    d = promote(str(path.parent), path.name, tracking_uri=tracking_env().get("MLFLOW_TRACKING_URI"))
    rows = ""
    if d.get("gate"):
        rows = "\n".join(
            f"| {k} | {c['challenger']} | {c['champion']} | {c['delta']:+} | {c['required']:+} | "
            f"{'ok' if c['ok'] else 'FAIL'} |"
            for k, c in d["gate"]["checks"].items()
        )
        rows = "| metric | challenger | champion | delta | required | |\n|---|---|---|---|---|---|\n" + rows
    create_markdown_artifact(
        key="ovt-promotion-gate",
        markdown=(
            f"# Promotion gate: {d['action']}\n\nmodel `{d['name']}`: challenger v{d['challenger']}, "
            f"champion v{d['champion_before']} -> v{d['champion_after']}\n\n{rows}\n\n"
            + "\n".join(f"- {r}" for r in ((d.get("gate") or {}).get("reasons") or []))
        ),
        description="Challenger vs champion on the held-out metrics",
    )
    return d


if __name__ == "__main__":
    import sys

    promote_flow(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")

"""The pipeline as a Prefect flow: `dvc repro` one stage at a time (DVC holds one repo lock), `dvc push`, then the
model registry: register the trained variant (alias `challenger`) and run the promotion gate.

Registration is a task here, not a DVC stage: `dvc repro` and `dvc exp run -S …` never create a model version or
move an alias, and need no tracking server. Orchestration only: what each stage does lives in ovt/ and stages/;
how DVC is driven lives in ovt.dvc_driver; registry logic in ovt.registry.

The registry tasks talk to the MLflow server named by MLFLOW_TRACKING_URI in `env`, else in this process's environment
(`ovt run` starts this flow in a subprocess with the services' client settings); the URI is passed to the registry
calls as an argument. `env` is also what the DVC subprocesses get on top of this process's environment.

    python -m flows.pipeline '{"stages": ["acquire"], "push": false}'   # prints the summary as JSON, last line
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from ovt import dvc_driver

SUMMARY_PREFIX = "OVT_SUMMARY "  # the line `ovt run` and benchmarks/pipeline.py read the summary from


@task(name="services-check")
def services_check(required: list[str]) -> dict:
    """Fail fast, with the service named, when something the run needs is down."""
    from ovt.services import status

    rows = {row["name"]: row for row in status(required)}
    down = [name for name in required if not rows.get(name, {}).get("healthy")]
    if down:
        raise RuntimeError(
            f"service(s) not healthy: {', '.join(down)} — start them with `ovt up` "
            f"(status: {[rows.get(n) for n in down]})"
        )
    return rows


# A stage is deterministic given its inputs, so re-running a failed one rarely helps; a transient lock or a
# flaky filesystem does, hence one retry.
@task(name="dvc-repro", retries=1, retry_delay_seconds=10, task_run_name="repro-{stage}")
def repro_stage(stage: str, repo: str, env: dict | None = None, run_cache: bool = True) -> dict:
    logger = get_run_logger()
    res = dvc_driver.repro(stage, cwd=repo, env=env, on_line=lambda line: logger.info(line), run_cache=run_cache)
    ran = stage in res.ran_stages
    logger.info(
        "stage %s %s in %.1f s (%.1f s CPU)", stage, "ran" if ran else "was up to date", res.seconds, res.cpu_seconds
    )
    return {"stage": stage, "ran": ran, "seconds": round(res.seconds, 2), "cpu_seconds": round(res.cpu_seconds, 2)}


@task(name="dvc-status")
def stale_stages(repo: str, env: dict | None = None) -> dict:
    """One `dvc status --json` over the whole pipeline: the stages it names are the stale ones."""
    t = time.perf_counter()
    stale = sorted(dvc_driver.status(cwd=repo, env=env))
    return {"stale": stale, "seconds": round(time.perf_counter() - t, 2)}


def reproduce(targets: list[str], repo: str, env: dict | None, run_cache: bool) -> tuple[list[dict], float]:
    """Reproduce `targets` (in pipeline order) one stage at a time; returns the per-stage rows and the seconds of
    the up-front status check.

    One `dvc status` answers for every stage at once; each `dvc repro` process costs ~1 s of start-up even when it
    has nothing to do. So the stages before the first stale one are reported up to date without starting DVC
    again (a no-op rerun is one status call); from the first stage that runs on, every stage goes through
    `dvc repro`, which re-checks it against its possibly new inputs."""
    logger = get_run_logger()
    check = stale_stages(repo, env=env)
    stale = set(check["stale"])
    rows: list[dict] = []
    upstream_ran = False
    for stage in targets:
        if not upstream_ran and stage not in stale:
            logger.info("stage %s is up to date (dvc status)", stage)
            rows.append({"stage": stage, "ran": False, "seconds": 0.0, "cpu_seconds": 0.0})
            continue
        row = repro_stage(stage, repo, env=env, run_cache=run_cache)
        upstream_ran = upstream_ran or row["ran"]
        rows.append(row)
    return rows, check["seconds"]


# Pushing talks to S3 over the network: retries with back-off help there.
@task(name="dvc-push", retries=3, retry_delay_seconds=[2, 5, 15])
def push(repo: str, env: dict | None = None) -> dict:
    logger = get_run_logger()
    res = dvc_driver.push(cwd=repo, env=env, on_line=lambda line: logger.info(line))
    return {"seconds": round(res.seconds, 2), "output": res.lines[-1] if res.lines else ""}


def _registry_params(repo: str, params_path: str):
    from ovt.config import load_params

    return load_params(Path(repo) / params_path).registry


# Idempotent (same lineage -> same version, nothing new), so a retry after a server restart is safe.
@task(name="register", retries=1, retry_delay_seconds=15)
def register(repo: str, params_path: str = "params.yaml", tracking_uri: str | None = None) -> dict:
    from ovt.registry.register import register as register_variant

    logger = get_run_logger()
    root = Path(repo)
    reg = register_variant(
        _registry_params(repo, params_path),
        root=root,
        models_dir=root / "models",
        eval_dir=root / "data" / "eval",
        tracking_uri=tracking_uri,
    )
    logger.info(
        "%s %s v%s (aliases %s)",
        "registered" if reg.created else "already registered",
        reg.name,
        reg.version,
        reg.aliases,
    )
    return reg.to_json()


# The gate retries its own MLflow calls with back-off; one task-level retry covers a server restart in between.
@task(name="promotion-gate", retries=1, retry_delay_seconds=15)
def promote(repo: str, params_path: str = "params.yaml", tracking_uri: str | None = None) -> dict:
    from ovt.registry.promote import promote as run_gate

    logger = get_run_logger()
    decision = run_gate(_registry_params(repo, params_path), tracking_uri=tracking_uri)
    logger.info(
        "gate: %s (challenger v%s, champion v%s -> v%s)",
        decision.action,
        decision.challenger,
        decision.champion_before,
        decision.champion_after,
    )
    return decision.to_json()


def _markdown(summary: dict) -> str:
    rows = "\n".join(
        f"| {r['stage']} | {'ran' if r['ran'] else 'up to date'} | {r['seconds']} | {r['cpu_seconds']} |"
        for r in summary["stages"]
    )
    reg, gate, pushed = summary.get("register"), summary.get("promote"), summary.get("push")
    registered = f"{reg['name']} v{reg['version']} (new: {reg['created']})" if reg else "skipped"
    return (
        f"# OVT pipeline run\n\n| stage | result | wall s | CPU s |\n|---|---|---|---|\n{rows}\n\n"
        f"dvc push: {pushed['output'] if pushed else 'skipped'}\n\n"
        f"registered: {registered}\n\n"
        f"gate: {gate['action'] if gate else 'skipped'}\n\ntotal: {summary['seconds']} s\n"
    )


@flow(name="ovt-pipeline", log_prints=True)
def pipeline(
    stages: list[str] | None = None,
    do_push: bool = True,
    check_services: bool = True,
    env: dict | None = None,
    repo: str | None = None,
    do_register: bool = True,
    do_promote: bool = True,
    params_path: str = "params.yaml",
    run_cache: bool = True,
) -> dict:
    """Reproduce `stages` (default: all of dvc.yaml, in order), push outputs to the DVC remote, register the
    trained variant and run the promotion gate. A second run with nothing changed reproduces nothing and
    registers nothing new (registration is idempotent on the lineage)."""
    t0 = time.perf_counter()
    repo = str(repo or dvc_driver.REPO_ROOT)
    order = dvc_driver.stage_order(f"{repo}/dvc.yaml")
    targets = stages or order
    unknown = [s for s in targets if s not in order]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {order}")
    if stages and order[-1] not in targets:  # a partial run (`ovt run -s acquire`) has no new model to register
        do_register = do_promote = False
    registry = do_register or do_promote
    # the registry server: named in `env` when this process was started without the services' settings (a
    # scheduled run from a plain shell), passed to the registry calls; None: the one MLflow reads from here
    tracking_uri = (env or {}).get("MLFLOW_TRACKING_URI")
    if registry and not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise RuntimeError(
            "MLFLOW_TRACKING_URI is not set: run the pipeline with `ovt run` (which passes the "
            "services' settings), export them with `eval $(ovt env)`, or pass "
            "do_register=False, do_promote=False"
        )
    if check_services and (do_push or registry):
        services_check((["s3"] if do_push else []) + (["mlflow"] if registry else []))
    results, status_s = reproduce(sorted(targets, key=order.index), repo, env, run_cache)
    timings: dict[str, float] = {"dvc_status": status_s}

    def timed(name: str, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t, 2)
        return out

    pushed = timed("push", push, repo, env=env) if do_push else None
    reg = timed("register", register, repo, params_path, tracking_uri) if do_register else None
    gate = timed("promote", promote, repo, params_path, tracking_uri) if do_promote else None
    summary = {
        "stages": results,
        "push": pushed,
        "register": reg,
        "promote": gate,
        "timings": timings,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    create_markdown_artifact(
        key="ovt-pipeline-summary",
        markdown=_markdown(summary),
        description="What the pipeline run reproduced, pushed, registered and promoted",
    )
    return summary


def main(argv: list[str]) -> None:
    """`python -m flows.pipeline ['{json flow parameters}']`: run the flow, print its summary on the last line."""
    kwargs = json.loads(argv[0]) if argv else {}
    summary = pipeline(**kwargs)
    print(SUMMARY_PREFIX + json.dumps(summary, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

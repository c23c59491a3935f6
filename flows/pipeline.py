"""The pipeline as a Prefect flow: `dvc repro <stage>` one stage at a time (DVC holds one repo lock), then `dvc push`.

Orchestration only: what each stage does lives in ovt/ and stages/; how DVC is driven lives in ovt.pipeline.
Run it with `ovt run` (local Prefect server) or `python -m flows.pipeline`; tests call it under
`prefect_test_harness`.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from ovt import pipeline as dvcrun


@task(name="services-check")
def services_check(required: list[str]) -> dict:
    """Fail fast, with the service named, when something the run needs is down."""
    from ovt.services import status

    rows = {row["name"]: row for row in status()}
    down = [name for name in required if not rows.get(name, {}).get("healthy")]
    if down:
        raise RuntimeError(f"service(s) not healthy: {', '.join(down)} — start them with `ovt up` "
                           f"(status: {[rows.get(n) for n in down]})")
    return rows


# A stage is deterministic given its inputs, so re-running a failed one rarely helps; a transient lock or a
# flaky filesystem does, hence one retry.
@task(name="dvc-repro", retries=1, retry_delay_seconds=10, task_run_name="repro-{stage}")
def repro_stage(stage: str, repo: str, env: dict | None = None) -> dict:
    logger = get_run_logger()
    res = dvcrun.repro(stage, cwd=repo, env=env, on_line=lambda line: logger.info(line))
    ran = stage in res.ran_stages
    logger.info("stage %s %s in %.1f s", stage, "ran" if ran else "was up to date", res.seconds)
    return {"stage": stage, "ran": ran, "seconds": round(res.seconds, 2)}


# Pushing talks to S3 over the network: retries with back-off help there.
@task(name="dvc-push", retries=3, retry_delay_seconds=[2, 5, 15])
def push(repo: str, env: dict | None = None) -> dict:
    logger = get_run_logger()
    res = dvcrun.push(cwd=repo, env=env, on_line=lambda line: logger.info(line))
    return {"seconds": round(res.seconds, 2), "output": res.lines[-1] if res.lines else ""}


@flow(name="ovt-pipeline", log_prints=True)
def pipeline(stages: list[str] | None = None, do_push: bool = True, check_services: bool = True,
             env: dict | None = None, repo: str | None = None) -> dict:
    """Reproduce `stages` (default: all of dvc.yaml, in order), then push outputs to the DVC remote."""
    t0 = time.perf_counter()
    repo = str(repo or dvcrun.REPO_ROOT)
    order = dvcrun.stage_order(f"{repo}/dvc.yaml")
    targets = stages or order
    unknown = [s for s in targets if s not in order]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {order}")
    if check_services and do_push:
        services_check(["s3"])
    results = [repro_stage(stage, repo, env=env) for stage in sorted(targets, key=order.index)]
    pushed = push(repo, env=env) if do_push else None
    summary = {"stages": results, "push": pushed, "seconds": round(time.perf_counter() - t0, 1)}
    rows = "\n".join(f"| {r['stage']} | {'ran' if r['ran'] else 'up to date'} | {r['seconds']} |" for r in results)
    create_markdown_artifact(
        key="ovt-pipeline-summary",
        markdown=(f"# OVT pipeline run\n\n| stage | result | seconds |\n|---|---|---|\n{rows}\n\n"
                  f"dvc push: {pushed['output'] if pushed else 'skipped'}\n\ntotal: {summary['seconds']} s\n"),
        description="What the pipeline run reproduced and pushed",
    )
    return summary


if __name__ == "__main__":
    pipeline()

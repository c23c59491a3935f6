"""Prefect fan-out of the render stage's shards over a task runner (ThreadPool, Dask or Ray), chosen by params.

Only the execution is swapped: planning, content keys, per-shard rendering and finalising are the library's
(`ovt.render.stage`), so every runner writes the same bytes. Each task renders one shard with its own render worker
process (one GL context), exactly as a local lane does.

    from flows.render_fanout import run_fanout
    run_fanout(RenderParams(task_runner="dask", workers=2), seed=0, assets_dir="data/assets", out_dir="data/renders")
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from ovt.render import stage
from ovt.render.config import RenderParams
from ovt.render.shards import ShardSpec


@task(name="render-shard", cache_policy=NO_CACHE)  # the shard's own content key decides what is redone
def render_shard(job: stage.RenderJob, spec: ShardSpec) -> dict:
    return job.run_shard(spec)


def make_task_runner(cfg: RenderParams):
    if cfg.task_runner in ("processes", "thread"):
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.task_runner == "dask":
        import dask
        from prefect_dask import DaskTaskRunner

        if cfg.cluster_address:
            return DaskTaskRunner(address=cfg.cluster_address)
        # Dask's worker processes are daemonic by default and daemonic processes may not start children; our
        # tasks start a render worker process, so the local cluster's workers must not be daemons.
        dask.config.set({"distributed.worker.daemon": False})
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True})
    from prefect_ray import RayTaskRunner  # optional dependency: pip install prefect-ray

    if cfg.cluster_address:
        return RayTaskRunner(address=cfg.cluster_address)
    return RayTaskRunner(init_kwargs={"num_cpus": cfg.workers, "include_dashboard": False})


def prefect_executor() -> stage.ShardExecutor:
    def execute(specs: list[ShardSpec], job: stage.RenderJob) -> list[dict]:
        futures = render_shard.map(job=unmapped(job), spec=specs)
        return [f.result() for f in futures]

    return execute


@flow(name="render-fanout")
def render_fanout(params: dict, seed: int, assets_dir: str, out_dir: str) -> dict:
    cfg = RenderParams.model_validate(params)
    return stage.run(cfg, seed=seed, assets_dir=Path(assets_dir), out_dir=Path(out_dir), executor=prefect_executor(),
                     progress=False)


def run_fanout(cfg: RenderParams, *, seed: int, assets_dir: str | Path, out_dir: str | Path) -> dict:
    """Run the render stage with its shards fanned out over the task runner `cfg.task_runner` names."""
    return render_fanout.with_options(task_runner=make_task_runner(cfg))(
        cfg.model_dump(mode="json"), seed, str(assets_dir), str(out_dir))

"""DVC stage `render`: assets -> multi-view webdataset shards + manifest (params.yaml: base, render)."""

from ovt.config import load_params
from ovt.render import stage


def main() -> None:
    p = load_params()
    if p.render.task_runner == "processes":
        stage.run(p.render, seed=p.base.seed, assets_dir="data/assets", out_dir="data/renders")
    else:  # Dask / Ray / threads through a Prefect task runner: same shards, same outputs
        from flows.render_fanout import run_fanout

        run_fanout(p.render, seed=p.base.seed, assets_dir="data/assets", out_dir="data/renders")


if __name__ == "__main__":  # required: render workers use the spawn start method and re-import this module
    main()

"""DVC stage `render`: assets -> multi-view webdataset shards + manifest (params.yaml: base, render).

The fan-out over worker processes or a Dask cluster is the library's (`render.executor`); nothing here orchestrates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovt.entry import stage_main

if TYPE_CHECKING:
    from ovt.config import Params


def _run(p: Params) -> None:
    from ovt.render import run

    run(p.render, seed=p.base.seed)


if __name__ == "__main__":  # required: render workers use the spawn start method and re-import this module
    stage_main(_run)

"""DVC stage `train`: OVT and baseline variants into models/<variant>/ (params.yaml: base, model, train).

Multi-GPU / multi-node: set OVT_TORCHRUN to a torchrun prefix (e.g. "torchrun --nnodes=2 --nproc_per_node=8
--rdzv-endpoint=host:29500") and this entry re-launches itself under it; every rank then runs `_run`, which joins
the process group around the stage (a plain process is rank 0 of 1).
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING

from ovt.entry import stage_main

if TYPE_CHECKING:
    from ovt.config import Params


def _run(p: Params) -> None:
    from ovt.train import TrainPaths, run_distributed

    run_distributed(p.train, seed=p.base.seed, paths=TrainPaths(), model_cfg=p.model)


def relaunch_under_torchrun() -> None:
    """Replace this process by `$OVT_TORCHRUN -m stages.train` unless it is already a torchrun rank."""
    launcher = os.environ.get("OVT_TORCHRUN")
    if launcher and "WORLD_SIZE" not in os.environ:
        argv = [*shlex.split(launcher), "-m", "stages.train", *sys.argv[1:]]
        os.execvp(argv[0], argv)


if __name__ == "__main__":
    relaunch_under_torchrun()
    stage_main(_run)

"""DVC stage `train`: OVT and baseline variants into models/<variant>/ (params.yaml: base, model, train).

Multi-GPU / multi-node: set OVT_TORCHRUN to a torchrun prefix (e.g. "torchrun --nnodes=2 --nproc_per_node=8
--rdzv-endpoint=host:29500") and this entry re-launches itself under it; every rank then runs `main()`.
"""

import os
import shlex
import sys

from ovt.train.ddp import main

if __name__ == "__main__":
    launcher = os.environ.get("OVT_TORCHRUN")
    if launcher and "WORLD_SIZE" not in os.environ:
        argv = [*shlex.split(launcher), "-m", "stages.train", *sys.argv[1:]]
        os.execvp(argv[0], argv)
    main()

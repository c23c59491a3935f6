"""OVT training: losses, hard-view mining, the minimax loop, DDP and checkpoints.

    from ovt.train import TrainPaths, run_distributed
    run_distributed(params.train, seed=..., paths=TrainPaths(), model_cfg=params.model)   # the DVC stage

`run` is the same stage in one process (rank 0 of 1); `run_distributed` joins the process group torchrun
describes around it.
"""

from __future__ import annotations

from ovt.lazy import lazy_exports

_EXPORTS = {
    "TrainParams": "ovt.train.config",
    "TrainPaths": "ovt.train.stage",
    "run": "ovt.train.stage",
    "run_distributed": "ovt.train.stage",
    "itc_loss": "ovt.train.losses",
    "positives_matrix": "ovt.train.losses",
    "vc_loss": "ovt.train.losses",
    "hard_views": "ovt.train.mining",
    "knn_weighted_centre": "ovt.train.mining",
    "mine_from_embeddings": "ovt.train.mining",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

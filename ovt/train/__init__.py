"""OVT training: losses, hard-view mining, the minimax loop, DDP and checkpoints."""

from __future__ import annotations

from ovt.lazy import lazy_exports

_EXPORTS = {
    "TrainParams": "ovt.train.config",
    "itc_loss": "ovt.train.losses",
    "positives_matrix": "ovt.train.losses",
    "vc_loss": "ovt.train.losses",
    "hard_views": "ovt.train.mining",
    "knn_weighted_centre": "ovt.train.mining",
    "mine_from_embeddings": "ovt.train.mining",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

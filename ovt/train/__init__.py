"""OVT training: losses, hard-view mining, the minimax loop, DDP and checkpoints."""

from __future__ import annotations

from typing import Any

# Lazy: `import ovt.config` (hence `ovt params`, `ovt --help`) loads only the config modules it
# needs, never the stage code behind these names (torch, open_clip, peft take seconds).
_EXPORTS = {
    "TrainParams": "ovt.train.config",
    "itc_loss": "ovt.train.losses",
    "positives_matrix": "ovt.train.losses",
    "vc_loss": "ovt.train.losses",
    "hard_views": "ovt.train.mining",
    "knn_weighted_centre": "ovt.train.mining",
    "mine_from_embeddings": "ovt.train.mining",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ovt.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)

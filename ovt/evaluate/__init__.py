"""Evaluate stage: zero-shot classification, viewpoint-robustness metrics, paired intervals, worst-case viewpoints.

    from ovt.evaluate import EvaluatePaths, run
    run(params.evaluate, seed=..., paths=EvaluatePaths(), render_view=...)   # the DVC stage

Tuned models run only their tail on the frozen-feature store's prefix; a model without one runs its full tower
through its interface (`encode_image`, `encode_text`, `preprocess`), so any model that offers it can be scored.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "EvaluateParams": "ovt.evaluate.config",
    "EvaluatePaths": "ovt.evaluate.stage",
    "run": "ovt.evaluate.stage",
    "ViewResults": "ovt.evaluate.metrics",
    "object_stats": "ovt.evaluate.metrics",
    "point_metrics": "ovt.evaluate.metrics",
    "ZeroShotClassifier": "ovt.evaluate.zeroshot",
    "build_classifier": "ovt.evaluate.zeroshot",
    "imagenet_templates": "ovt.evaluate.zeroshot",
    "topk_correct": "ovt.evaluate.zeroshot",
}

__all__ = ["EvaluateParams", "EvaluatePaths", "ViewResults", "ZeroShotClassifier", "build_classifier",
           "imagenet_templates", "object_stats", "point_metrics", "run", "topk_correct"]


def __getattr__(name: str) -> Any:  # lazy: `import ovt.evaluate.config` (params loading) must not pull in torch
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ovt.evaluate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)

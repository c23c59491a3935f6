"""Evaluate stage: zero-shot classification, viewpoint-robustness metrics, paired intervals, worst-case viewpoints.

    from ovt.evaluate import EvaluatePaths, run
    run(params.evaluate, seed=..., paths=EvaluatePaths(), render_view=...)   # the DVC stage

Tuned models run only their tail on the frozen-feature store's prefix; a model without one runs its full tower
through its interface (`encode_image`, `encode_text`, `preprocess`), so any model that offers it can be scored.
"""

from __future__ import annotations

from ovt.lazy import lazy_exports

_EXPORTS = {
    "EvaluateParams": "ovt.evaluate.config",
    "EvaluatePaths": "ovt.evaluate.stage",
    "ViewResults": "ovt.evaluate.metrics",
    "object_stats": "ovt.evaluate.metrics",
    "point_metrics": "ovt.evaluate.metrics",
    "ZeroShotClassifier": "ovt.evaluate.zeroshot",
    "build_classifier": "ovt.evaluate.zeroshot",
    "imagenet_templates": "ovt.evaluate.zeroshot",
    "topk_correct": "ovt.evaluate.zeroshot",
    "run": "ovt.evaluate.stage",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

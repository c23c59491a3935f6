"""Evaluate stage: zero-shot classification, viewpoint-robustness metrics, paired intervals, worst-case viewpoints.

Only the model interface (`encode_image`, `encode_text`, `preprocess`) is used, so any model that offers it
(the OVT variants, the base, a tiny test CLIP) can be scored.
"""

from ovt.evaluate.config import EvaluateParams
from ovt.evaluate.metrics import ViewResults, object_stats, point_metrics
from ovt.evaluate.zeroshot import ZeroShotClassifier, build_classifier, imagenet_templates, topk_correct
from ovt.evaluate.stage import EvaluatePaths, run  # noqa: E402  (last: the stage imports the modules above)

__all__ = [
    "EvaluateParams",
    "EvaluatePaths",
    "ViewResults",
    "ZeroShotClassifier",
    "build_classifier",
    "imagenet_templates",
    "object_stats",
    "point_metrics",
    "run",
    "topk_correct",
]

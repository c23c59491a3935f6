"""One frozen-feature pass per image and frozen configuration, shared by bootstrap, train and evaluate.

from ovt.features import FeatureParams, FeaturePaths, run, open_store
run(params.features, model=params.model, seed=..., paths=FeaturePaths())   # the DVC stage
store = open_store(Path("data/features"), params.model)                    # consumers
prefix, pooled = store.lookup(keys)                                         # [n, ...] fp32, [n, D] fp32
"""

from __future__ import annotations

from ovt.lazy import lazy_exports

_EXPORTS = {
    "FeatureParams": "ovt.features.config",
    "FeaturePaths": "ovt.features.stage",
    "run": "ovt.features.stage",
    "FeatureStore": "ovt.features.store",
    "open_store": "ovt.features.store",
    "tower_key": "ovt.features.store",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

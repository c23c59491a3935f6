"""Models for the train stage: open_clip factory, the embedded base, LoRA placements, VIFormer, the OVT model."""

from __future__ import annotations

import os

from ovt.lazy import lazy_exports

# No network model hub: the embedded weights are packaged, open_clip tags come from the local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_EXPORTS = {
    "BootstrapParams": "ovt.model.config",
    "LoraParams": "ovt.model.config",
    "ModelParams": "ovt.model.config",
    "VIFormerParams": "ovt.model.config",
    "BaseModel": "ovt.model.factory",
    "build_base": "ovt.model.factory",
    "OVTModel": "ovt.model.ovt_model",
    "build_ovt_model": "ovt.model.ovt_model",
    "load_variant": "ovt.model.ovt_model",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

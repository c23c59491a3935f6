"""Models for the train stage: open_clip factory, the embedded base, LoRA placements, VIFormer, the OVT model."""

from __future__ import annotations

from ovt.lazy import lazy_exports

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

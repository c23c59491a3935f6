"""Models for the train stage: open_clip factory, the embedded base, LoRA placements, VIFormer, the OVT model."""

from __future__ import annotations

import os
from typing import Any

# No network model hub: the embedded weights are packaged, open_clip tags come from the local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Lazy: `import ovt.config` (hence `ovt params`, `ovt --help`) loads only the config modules it
# needs, never the stage code behind these names (torch, open_clip, peft take seconds).
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
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ovt.model' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)

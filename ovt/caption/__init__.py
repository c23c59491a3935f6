"""Caption stage: category-guided captions for every rendered view, with provenance, cleaning and the
MVCap export/reader. Entry point: `ovt.caption.stage.run`."""

from __future__ import annotations

from typing import Any

# Lazy: `import ovt.config` (hence `ovt params`, `ovt --help`) loads only the config modules it
# needs, never the stage code behind these names (torch, open_clip, peft take seconds).
_EXPORTS = {
    "Caption": "ovt.caption.base",
    "Captioner": "ovt.caption.base",
    "View": "ovt.caption.base",
    "CaptionParams": "ovt.caption.config",
    "CleaningParams": "ovt.caption.config",
    "TemplateParams": "ovt.caption.config",
    "VlmParams": "ovt.caption.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ovt.caption' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)

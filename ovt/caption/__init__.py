"""Caption stage: category-guided captions for every rendered view, with provenance, cleaning and the MVCap
export/reader. Entry point: `ovt.caption.run` (the stage itself: `ovt.caption.stage.run`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovt.lazy import lazy_exports

_EXPORTS = {
    "Caption": "ovt.caption.base",
    "Captioner": "ovt.caption.base",
    "View": "ovt.caption.base",
    "CaptionParams": "ovt.caption.config",
    "CleaningParams": "ovt.caption.config",
    "TemplateParams": "ovt.caption.config",
    "VlmParams": "ovt.caption.config",
}


@dataclass(frozen=True)
class CaptionPaths:
    """The paths dvc.yaml declares for the caption stage."""

    renders_dir: Path = Path("data/renders")
    assets_dir: Path = Path("data/assets")
    out_dir: Path = Path("data/captions")


def run(params: Any, *, seed: int, paths: CaptionPaths = CaptionPaths()) -> dict:
    import importlib  # by name, like the lazy exports: importing the package must not load the stage

    run_stage = importlib.import_module("ovt.caption.stage").run

    return run_stage(
        params, seed=seed, renders_dir=paths.renders_dir, assets_dir=paths.assets_dir, out_dir=paths.out_dir
    )


__getattr__, _lazy = lazy_exports(__name__, _EXPORTS)
__all__ = sorted([*_lazy, "CaptionPaths", "run"])

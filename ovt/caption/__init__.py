"""Caption stage: category-guided captions for every rendered view, with provenance, cleaning and the MVCap
export/reader. Entry point: `ovt.caption.run` (the stage itself: `ovt.caption.stage.run`)."""

from dataclasses import dataclass

from ovt.caption.base import Caption, Captioner, View
from ovt.caption.config import CaptionParams, CleaningParams, TemplateParams, VlmParams


@dataclass(frozen=True)
class CaptionPaths:
    """The paths dvc.yaml declares for the caption stage."""

    renders_dir: str = "data/renders"
    assets_dir: str = "data/assets"
    out_dir: str = "data/captions"


def run(params: CaptionParams, *, seed: int, paths: CaptionPaths = CaptionPaths()) -> dict:
    from ovt.caption.stage import run as run_stage

    return run_stage(params, seed=seed, renders_dir=paths.renders_dir, assets_dir=paths.assets_dir,
                     out_dir=paths.out_dir)


__all__ = ["Caption", "CaptionParams", "CaptionPaths", "Captioner", "CleaningParams", "TemplateParams", "View",
           "VlmParams", "run"]

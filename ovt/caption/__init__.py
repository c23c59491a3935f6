"""Caption stage (issue 4): category-guided captions for every rendered view, with provenance, cleaning and the
MVCap export/reader. Entry point: `ovt.caption.stage.run`."""

from ovt.caption.base import Caption, Captioner, View
from ovt.caption.config import CaptionParams, CleaningParams, TemplateParams, VlmParams

__all__ = ["Caption", "Captioner", "View", "CaptionParams", "CleaningParams", "TemplateParams", "VlmParams"]

"""The whole params.yaml as one typed model: one block per stage, each defined next to the code that reads it.

Every stage validates the *whole* file at start (`load_params`), so a typo anywhere fails fast with the key named,
then reads its own block. Defaults are the embedded default; params.yaml spells them out.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field

from ovt.acquire.config import AcquireParams
from ovt.caption.config import CaptionParams
from ovt.evaluate.config import EvaluateParams
from ovt.features.config import FeatureParams
from ovt.model.config import BootstrapParams, ModelParams
from ovt.params_base import PROMPT_WORDS, ParamsError, StrictModel, validate_block
from ovt.registry.config import RegisterParams
from ovt.render.config import RenderParams
from ovt.train.config import TrainParams

__all__ = ["BaseParams", "Params", "ParamsError", "load_params"]


class BaseParams(StrictModel):
    seed: int = Field(2012, description="root seed; every per-item seed is derived from it (2012 = official OVT)")
    prompt_words: dict[str, str] = Field(
        default_factory=lambda: dict(PROMPT_WORDS),
        description="label -> the words its prompts use, read by bootstrap and evaluate",
    )


class Params(StrictModel):
    base: BaseParams = BaseParams()
    acquire: AcquireParams = AcquireParams()
    render: RenderParams = RenderParams()
    caption: CaptionParams = CaptionParams()
    model: ModelParams = ModelParams()
    features: FeatureParams = FeatureParams()
    bootstrap: BootstrapParams = BootstrapParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    registry: RegisterParams = RegisterParams()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError naming every bad key and what is allowed."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found (run from the repository root, or pass the path)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping of blocks ({', '.join(Params.model_fields)})")
    return validate_block(Params, data, source=str(path))  # type: ignore[return-value]

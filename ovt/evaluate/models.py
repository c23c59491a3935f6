"""Find and load the models to compare: the base, every trained variant, and WiSE-FT interpolations.

Loading goes only through the model package's interface (`OVTModel.load(dir)`), imported lazily so this stage's
pure parts (metrics, bootstrap, search, folders) work and test without the model package.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ovt.io import sha256_file, stable_digest
from ovt.train.config import SEEDS_DIR, replicate_name

log = logging.getLogger(__name__)

ModelLoader = Callable[[Path], Any]
# Preferred display/comparison order: later minus earlier reads as a gain.
ORDER = ("base", "contrastive", "ovt")
# "ovt_wise050" (alpha 0.50): no "-" (metrics.json uses "a-b" for differences), no "." (metric paths are dotted)
# and no "@" (MLflow rejects it in metric names).
WISE_SEP = "_wise"


def wise_name(variant: str, alpha: float) -> str:
    return f"{variant}{WISE_SEP}{round(alpha * 100):03d}"


# The train stage's base stand-in: its saved model with adapters switched off (adapter_scale 0).
ZEROSHOT = "zeroshot"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # "base", "contrastive", "ovt", "ovt_wise050", ...
    path: Path
    adapter_scale: float | None = None  # WiSE-FT alpha applied after loading (None = as trained)


def default_loader(path: Path) -> Any:
    """Load a model directory through the shared interface."""
    from ovt.model import OVTModel  # lazy: the model package is heavy and owned by another stage

    return OVTModel.load(path)


def _sort_key(name: str) -> tuple[int, str]:
    head = name.split(WISE_SEP, 1)[0]
    return (ORDER.index(head) if head in ORDER else len(ORDER), name)


def _train_scale(path: Path) -> float | None:
    """The adapter scale the train stage recorded for a variant (train.json), if any."""
    marker = path / "train.json"
    if marker.is_file():
        scale = json.loads(marker.read_text()).get("adapter_scale")
        return None if scale is None else float(scale)
    return None


def discover(
    models_dir: Path, *, base_name: str, variants: list[str] | None, wise_alphas: list[float], wise_variants: list[str]
) -> list[ModelSpec]:
    """The base, then the trained variants (dirs with model.json, or those named in params), then WiSE-FT points.

    The base is scored as a saved model with its adapters switched off (scale 0: LoRA delta and VIFormer residual
    vanish), which is exactly the frozen base the variants were trained from. Its source is, in order:
    `models/<base_name>/` if it holds a model.json, the train stage's `zeroshot` variant, else the first trained
    variant in ORDER (contrastive, ovt, then others by name).
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"models directory not found: {models_dir}")
    saved = sorted(p.name for p in models_dir.iterdir() if (p / "model.json").is_file())
    if variants is not None:
        missing = [v for v in variants if v not in saved]
        if missing:
            raise FileNotFoundError(
                f"evaluate.variants names folders without a model.json under {models_dir}: {missing} (found: {saved})"
            )
        trained = list(variants)
    else:
        trained = [v for v in saved if v not in (base_name, ZEROSHOT)]
    specs: list[ModelSpec] = []
    # known variants before unknown ones, so an odd extra folder never becomes the base
    base_src = next((n for n in (base_name, ZEROSHOT, *sorted(trained, key=_sort_key)) if n in saved), None)
    if base_src is not None:
        specs.append(ModelSpec(base_name, models_dir / base_src, 0.0))
    for v in trained:
        specs.append(ModelSpec(v, models_dir / v, _train_scale(models_dir / v)))
    for v in wise_variants:
        if v in trained:
            specs += [ModelSpec(wise_name(v, a), models_dir / v, float(a)) for a in wise_alphas]
    if not specs:
        raise FileNotFoundError(f"no saved models (folders with model.json) under {models_dir}")
    return sorted(specs, key=lambda s: _sort_key(s.name))


POOLED_SEP = "_x"  # "ovt_x3": the per-object results of ovt averaged over its 3 training seeds


def replicates(spec: ModelSpec) -> list[ModelSpec]:
    """The seed replicates of a trained variant (folders seeds/<k>/ with a model.json), by k; [] for none."""
    root = spec.path / SEEDS_DIR
    if spec.adapter_scale == 0.0 or WISE_SEP in spec.name or not root.is_dir():
        return []
    ks = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "model.json").is_file())
    return [ModelSpec(replicate_name(spec.name, k), root / str(k), _train_scale(root / str(k))) for k in ks]


def pooled_name(variant: str, n_seeds: int) -> str:
    return f"{variant}{POOLED_SEP}{n_seeds}"


def dir_digest(path: Path) -> str:
    """Content digest of a model directory (every file except checkpoints, which do not define the model, and the
    seed replicates, which are models of their own)."""
    root = Path(path)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and "checkpoints" not in p.parts and p.relative_to(root).parts[0] != SEEDS_DIR
    )
    return stable_digest([(str(p.relative_to(path)), sha256_file(p)) for p in files])


def load(spec: ModelSpec, loader: ModelLoader) -> Any:
    model = loader(spec.path)
    if spec.adapter_scale is not None:
        if not hasattr(model, "set_adapter_scale"):
            raise TypeError(f"model {spec.name}: WiSE-FT needs set_adapter_scale(), missing on {type(model)}")
        model.set_adapter_scale(spec.adapter_scale)
    if hasattr(model, "eval"):
        model.eval()
    return model

"""Packaging the trained variant as an MLflow model that loads without unpickling anything.

The model is logged "from code" (`served_model.py` is executed at load time); the weights are safetensors, the
configuration JSON, and the `ovt` package (Python sources only) travels as a code path, so the requirements name
only installable third-party packages. A file in a format that can carry a pickle (`.pkl`, `.pt`, `.bin`, ...)
makes packaging fail instead of shipping it.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

from ovt.io import atomic_write_json
from ovt.registry.served_model import ART_BASE, ART_CONFIG, ART_MODEL
from ovt.train.config import SEEDS_DIR

SERVED_MODEL_FILE = Path(__file__).with_name("served_model.py")
OVT_PACKAGE = Path(__file__).resolve().parents[1]
_SKIP_DIRS = {"checkpoints", SEEDS_DIR, "__pycache__"}  # resume state, seed replicates, bytecode: not the served model
#: Suffixes of formats that may hold a pickle (torch.save, numpy object arrays, joblib, ...).
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".npy", ".npz"}

#: Distributions the served model imports (ovt.model + ovt.registry.predict/inputs + MLflow's pyfunc).
REQUIREMENTS = (
    "mlflow",
    "torch",
    "open_clip_torch",
    "transformers",
    "peft",
    "safetensors",
    "pydantic",
    "pillow",
    "pandas",
    "numpy",
    "tqdm",
    "pyyaml",
)


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "image", required=False),
            ColSpec("string", "text", required=False),
            ColSpec("string", "class_names", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(Array("double"), "image_embedding", required=False),
            ColSpec(Array("double"), "text_embedding", required=False),
            ColSpec(Array("double"), "probs", required=False),
            ColSpec("string", "label", required=False),
        ]
    )
    # Defaults mean "not given": no class names, the registered template, the model's learned scale.
    params = ParamSchema(
        [
            ParamSpec("class_names", "string", [], shape=(-1,)),
            ParamSpec("template", "string", ""),
            ParamSpec("logit_scale", "double", 0.0),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def example_image_b64(size: int = 32) -> str:
    """A small deterministic PNG (a red square on white) for the input example."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).rectangle([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=(200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def input_example() -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "image": [example_image_b64()],
            "text": ["a 3D render of a chair."],
            "class_names": [json.dumps(["chair", "table"])],
        }
    )


def _copy_clean(src: Path, dst: Path) -> None:
    """Copy a weights folder, refusing pickle-capable files (the served model must load without unpickling)."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        skipped = [n for n in names if n in _SKIP_DIRS or n.startswith(".")]
        for n in names:
            if n not in skipped and Path(n).suffix.lower() in PICKLE_SUFFIXES and (Path(folder) / n).is_file():
                raise ValueError(
                    f"{Path(folder) / n}: a {Path(n).suffix} file can hold a pickle; the served model "
                    f"takes weights as safetensors and configuration as JSON only"
                )
        return skipped

    shutil.copytree(src, dst, ignore=ignore)


def stage_artifacts(model_dir: Path, base_dir: Path | None, staging: Path, prompt_template: str) -> dict[str, str]:
    """Copy what the served model needs into `staging`; return the artifacts mapping for MLflow."""
    if not (model_dir / "model.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved OVT model (no model.json)")
    _copy_clean(model_dir, staging / ART_MODEL)
    arts = {ART_MODEL: str(staging / ART_MODEL)}
    if base_dir is not None and base_dir.is_dir():
        _copy_clean(base_dir, staging / ART_BASE)
        arts[ART_BASE] = str(staging / ART_BASE)
    atomic_write_json(staging / "serving.json", {"prompt_template": prompt_template})
    arts[ART_CONFIG] = str(staging / "serving.json")
    return arts


def stage_code(staging: Path) -> Path:
    """The `ovt` package's Python sources (no bytecode, no data) under `staging/code/ovt`."""
    dst = staging / "code" / "ovt"
    shutil.copytree(
        OVT_PACKAGE,
        dst,
        ignore=lambda d, names: [
            n for n in names if n in _SKIP_DIRS or (Path(d, n).is_file() and not n.endswith(".py"))
        ],
    )
    return dst


def pip_requirements() -> list[str]:
    """Pinned third-party requirements; `ovt` itself is not one (it ships as a code path)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in REQUIREMENTS:
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def log_model(
    model_dir: Path,
    base_dir: Path | None,
    *,
    name: str,
    prompt_template: str,
    staging: Path,
    tags: dict[str, str] | None = None,
) -> Any:
    """`mlflow.pyfunc.log_model` (models from code) inside the active run; returns the ModelInfo."""
    import mlflow.pyfunc

    arts = stage_artifacts(model_dir, base_dir, staging, prompt_template)
    code = stage_code(staging)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(SERVED_MODEL_FILE),
        artifacts=arts,
        code_paths=[str(code)],
        signature=signature(),
        input_example=input_example(),
        pip_requirements=pip_requirements(),
        tags=tags,
    )

"""The trained OVT adapter as an MLflow pyfunc model: images and/or texts in, normalised embeddings out.

Artifacts are the variant folder (peft `adapter/`, `viformer.safetensors`, `model.json`) and, for the embedded base,
the bootstrapped `models/base/` folder, so `mlflow.pyfunc.load_model("models:/<name>@champion")` rebuilds the model on
a machine that has only the Python packages: the base towers come from the local open_clip/HF cache or from the
packaged (embedded) weights, the trained parts from these artifacts.

Input (DataFrame, dict of columns, or list of row dicts): `image` (base64 PNG/JPEG, optionally a data: URL, or a
local file path) and/or `text`; optionally `class_names` (a JSON list per row). Params: `class_names` (list),
`template` (prompt with one `{}`), `logit_scale` (softmax temperature; default: the model's learned scale).
Output: one row per input row with `image_embedding`, `text_embedding` (lists, L2-normalised; None where the row
had no image/text) and, when class names are given and the row has an image, `probs` (zero-shot softmax over the
class names) and `label` (argmax).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc

# Keys of PythonModelContext.artifacts.
ART_MODEL = "model"
ART_BASE = "base"
BATCH = 32
_SKIP_DIRS = {"checkpoints"}  # resume state: not part of the served model, can be large


class OVTPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps `ovt.model.OVTModel`; holds no weights itself (they travel as artifacts)."""

    def __init__(self, prompt_template: str = "a 3D render of a {}.") -> None:
        self.prompt_template = prompt_template
        self.model: Any = None

    def load_context(self, context: Any) -> None:
        base = context.artifacts.get(ART_BASE)
        self.model = load_ovt_model(Path(context.artifacts[ART_MODEL]), Path(base) if base else None)

    # No type hints on predict: MLflow 3 would derive (and enforce) a schema from them instead of `signature()`.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import pandas as pd

        return pd.DataFrame(predict_rows(self.model, to_rows(model_input), params or {}, self.prompt_template))


def load_ovt_model(model_dir: Path, base_dir: Path | None = None) -> Any:
    """`OVTModel.load(model_dir)` in eval mode; the shipped base folder is passed when the loader takes one."""
    from ovt.model import OVTModel

    kwargs = {}
    if base_dir is not None and "base_dir" in inspect.signature(OVTModel.load).parameters:
        kwargs["base_dir"] = base_dir
    model = OVTModel.load(model_dir, **kwargs)
    model.eval()
    model.requires_grad_(False)  # inference only; never flip torch's global grad mode from a loader
    return model


# ---------------------------------------------------------------------------------------------------- input parsing

def to_rows(model_input: Any) -> list[dict[str, Any]]:
    """Normalise a DataFrame / dict of columns / dict of scalars / list of dicts to a list of row dicts."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        rows = model_input.to_dict(orient="records")
        # MLflow's schema enforcement turns a dict of columns ({"text": ["a", "b"]}) into ONE row whose cells are
        # the lists: undo that so both spellings mean "one row per list element".
        if len(rows) == 1 and any(_is_seq(rows[0].get(c)) for c in ("image", "text")):
            return to_rows({k: (list(v) if _is_seq(v) and k != "class_names" else v) for k, v in rows[0].items()})
    elif isinstance(model_input, dict):
        # Lists are columns; a scalar (and class_names, a list shared by all rows) is broadcast to every row.
        cols = {k: list(v) for k, v in model_input.items() if _is_seq(v) and k != "class_names"}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"input columns have different lengths: { {k: len(v) for k, v in cols.items()} }")
        n = lengths.pop() if lengths else 1
        shared = {k: v for k, v in model_input.items() if k not in cols}
        rows = [{**shared, **{k: v[i] for k, v in cols.items()}} for i in range(n)]
    elif isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        rows = list(model_input)
    else:
        raise ValueError(f"unsupported input type {type(model_input).__name__}: pass a DataFrame, a dict of "
                         f"columns or a list of row dicts with 'image' and/or 'text'")
    unknown = sorted({k for r in rows for k in r} - {"image", "text", "class_names"})
    if unknown:
        raise ValueError(f"unknown input column(s) {unknown}; allowed: image, text, class_names")
    return [{k: (None if _missing(v) else v) for k, v in r.items()} for r in rows]


def _is_seq(v: Any) -> bool:
    return isinstance(v, (list, tuple)) or type(v).__name__ == "ndarray"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def decode_image(value: Any, row: int) -> Any:
    """A PIL image (RGB) from base64 bytes/str, a data: URL or a local path; errors name the row."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, str):
            s = value.strip()
            if s.startswith("data:"):
                s = s.split(",", 1)[-1]
            # A short string naming an existing file is a path; anything else must be base64.
            if len(s) < 4096 and Path(s).is_file():
                data = Path(s).read_bytes()
            else:
                try:
                    data = base64.b64decode(s, validate=True)
                except (binascii.Error, ValueError):
                    raise ValueError("neither an existing file path nor valid base64") from None
        else:
            raise ValueError(f"expected a base64 string or path, got {type(value).__name__}")
        img = Image.open(io.BytesIO(data))
        img.load()
    except (ValueError, UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"row {row}: column 'image' is not a readable image: {exc}") from None
    return img.convert("RGB")


def _class_names(row: dict[str, Any], params: dict[str, Any], i: int) -> list[str] | None:
    raw = row.get("class_names")
    if raw is None:
        raw = params.get("class_names")
    if raw is None or (not isinstance(raw, str) and hasattr(raw, "__len__") and len(raw) == 0):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"row {i}: class_names must be a JSON list of strings, got {raw[:80]!r}") from None
    names = list(raw) if hasattr(raw, "__iter__") and not isinstance(raw, (str, bytes, dict)) else None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"row {i}: class_names must be a non-empty list of strings, got {raw!r}")
    return names


# ---------------------------------------------------------------------------------------------------- prediction

def predict_rows(model: Any, rows: list[dict[str, Any]], params: dict[str, Any],
                 default_template: str) -> list[dict[str, Any]]:
    import torch

    with torch.no_grad():
        return _predict_rows(model, rows, params, default_template)


def _predict_rows(model: Any, rows: list[dict[str, Any]], params: dict[str, Any],
                 default_template: str) -> list[dict[str, Any]]:
    import torch

    if model is None:
        raise RuntimeError("OVTPyfunc.predict called before load_context")
    template = params.get("template") or default_template
    if template.count("{}") != 1:
        raise ValueError(f"param 'template' needs exactly one '{{}}' slot, got {template!r}")
    scale = params.get("logit_scale")
    scale = float(scale) if scale not in (None, 0, 0.0) else float(model.logit_scale.detach().exp())

    img_idx = [i for i, r in enumerate(rows) if r.get("image") is not None]
    txt_idx = [i for i, r in enumerate(rows) if r.get("text") is not None]
    if not img_idx and not txt_idx and rows:
        raise ValueError("every row lacks both 'image' and 'text'")
    img_emb = _encode_images(model, [decode_image(rows[i]["image"], i) for i in img_idx])
    bad_text = [i for i in txt_idx if not isinstance(rows[i]["text"], str)]
    if bad_text:
        raise ValueError(f"row(s) {bad_text}: column 'text' must be a string")
    txt_emb = _encode_texts(model, [rows[i]["text"] for i in txt_idx])

    out: list[dict[str, Any]] = [{"image_embedding": None, "text_embedding": None} for _ in rows]
    for k, i in enumerate(img_idx):
        out[i]["image_embedding"] = img_emb[k].tolist()
    for k, i in enumerate(txt_idx):
        out[i]["text_embedding"] = txt_emb[k].tolist()

    # Zero-shot: one text embedding per class name (cached per distinct list: rows usually share it).
    cache: dict[tuple[str, ...], torch.Tensor] = {}
    for k, i in enumerate(img_idx):
        names = _class_names(rows[i], params, i)
        if names is None:
            continue
        key = tuple(names)
        if key not in cache:
            cache[key] = _encode_texts(model, [template.format(n) for n in names])
        probs = (scale * img_emb[k : k + 1] @ cache[key].T).softmax(dim=-1)[0]
        out[i]["probs"] = probs.tolist()
        out[i]["label"] = names[int(probs.argmax())]
    return out


def _encode_images(model: Any, images: list[Any]) -> Any:
    import torch

    if not images:
        return torch.empty(0)
    chunks = []
    for s in range(0, len(images), BATCH):
        batch = torch.stack([model.preprocess(im) for im in images[s : s + BATCH]])
        chunks.append(model.encode_image(batch).float())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


def _encode_texts(model: Any, texts: list[str]) -> Any:
    import torch

    if not texts:
        return torch.empty(0)
    chunks = [model.encode_text(texts[s : s + BATCH]).float() for s in range(0, len(texts), BATCH)]
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


# ---------------------------------------------------------------------------------------------------- logging

def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "image", required=False), ColSpec("string", "text", required=False),
                     ColSpec("string", "class_names", required=False)])
    outputs = Schema([ColSpec(Array("double"), "image_embedding", required=False),
                      ColSpec(Array("double"), "text_embedding", required=False),
                      ColSpec(Array("double"), "probs", required=False),
                      ColSpec("string", "label", required=False)])
    # Defaults mean "not given": no class names, the registered template, the model's learned scale.
    params = ParamSchema([ParamSpec("class_names", "string", [], shape=(-1,)),
                          ParamSpec("template", "string", ""),
                          ParamSpec("logit_scale", "double", 0.0)])
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

    return pd.DataFrame({"image": [example_image_b64()], "text": ["a 3D render of a chair."],
                         "class_names": [json.dumps(["chair", "table"])]})


def stage_artifacts(model_dir: Path, base_dir: Path | None, staging: Path) -> dict[str, str]:
    """Copy what the served model needs (no checkpoints) into `staging`; return the pyfunc artifacts mapping."""
    if not (model_dir / "model.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved OVT model (no model.json)")
    dst = staging / ART_MODEL
    shutil.copytree(model_dir, dst, ignore=lambda d, names: [n for n in names if n in _SKIP_DIRS
                                                             or n.startswith(".")])
    arts = {ART_MODEL: str(dst)}
    if base_dir is not None and base_dir.is_dir():
        shutil.copytree(base_dir, staging / ART_BASE, ignore=shutil.ignore_patterns(".*"))
        arts[ART_BASE] = str(staging / ART_BASE)
    return arts


def pip_requirements() -> list[str]:
    """Explicit requirements (inference would load the model in a subprocess: slow, and it misses `ovt`)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("ovt-pipeline", "mlflow", "torch", "torchvision", "open_clip_torch", "peft", "safetensors",
                "pillow", "pandas"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def log_pyfunc(model_dir: Path, base_dir: Path | None, *, name: str, prompt_template: str, staging: Path,
               tags: dict[str, str] | None = None) -> Any:
    """`mlflow.pyfunc.log_model(name=…)` inside the active run; returns the ModelInfo (model_uri = models:/m-…)."""
    arts = stage_artifacts(model_dir, base_dir, staging)
    return mlflow.pyfunc.log_model(
        name=name, python_model=OVTPyfunc(prompt_template), artifacts=arts, signature=signature(),
        input_example=input_example(), pip_requirements=pip_requirements(), tags=tags,
    )

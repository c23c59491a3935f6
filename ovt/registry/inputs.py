"""Input parsing for the served model: every accepted request shape becomes a list of row dicts.

Input (DataFrame, dict of columns, or list of row dicts): `image` (base64 PNG/JPEG, optionally a data: URL, or a
local file path) and/or `text`; optionally `class_names` (a JSON list per row, or a list shared by all rows).
Errors name the row and the column.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from pathlib import Path
from typing import Any

COLUMNS = ("image", "text", "class_names")


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
        raise ValueError(
            f"unsupported input type {type(model_input).__name__}: pass a DataFrame, a dict of "
            f"columns or a list of row dicts with 'image' and/or 'text'"
        )
    unknown = sorted({k for r in rows for k in r} - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown input column(s) {unknown}; allowed: {', '.join(COLUMNS)}")
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


def class_names(row: dict[str, Any], params: dict[str, Any], i: int) -> list[str] | None:
    """The row's class names (its own column first, else the request param), or None for no zero-shot."""
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

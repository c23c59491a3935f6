"""Reading the render stage's outputs (docs/architecture.md, render -> data/renders/) as captioner `View`s.

A render shard is complete only when its completion JSON exists beside the tar (the render stage writes it after
the tar); incomplete shards are skipped here and picked up by the next run. Per view, the render manifest row
(camera, ids, MVCap path) wins over the sample's own JSON, and the acquire manifest row supplies asset metadata
(tags, dims_cm, ...), joined by asset_id; the sample JSON is the fallback for both.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from ovt.caption.base import View
from ovt.io import read_jsonl
from ovt.shards import Shard, list_shards

log = logging.getLogger(__name__)


def list_render_shards(renders_dir: Path) -> tuple[list[Shard], list[Path]]:
    """(complete shards sorted by index, tars that fail the shard integrity check)."""
    return list_shards(Path(renders_dir) / "shards")


def load_manifest(path: Path, key_field: str) -> dict[str, dict]:
    """A jsonl manifest keyed by `key_field`; {} when the file is absent (the sample JSON then stands alone)."""
    path = Path(path)
    if not path.exists():
        log.warning("manifest not found: %s (falling back to the shards' sample JSON)", path)
        return {}
    rows = {}
    for i, row in enumerate(read_jsonl(path)):
        if key_field not in row:
            raise ValueError(f"{path}: row {i} has no {key_field!r} field")
        rows[str(row[key_field])] = row
    return rows


def view_from_sample(
    key: str, png: bytes, meta: dict[str, Any], render_row: dict | None, asset_row: dict | None
) -> View:
    """Join one shard sample with its render-manifest and asset-manifest rows. Raises ValueError on bad data."""
    r = {**meta, **(render_row or {})}
    a = {**meta, **(asset_row or {})}
    asset_id = r.get("asset_id") or key.rsplit("_", 1)[0]
    view_no = r.get("view")
    if view_no is None:
        tail = key.rsplit("_", 1)[-1]
        if not tail.isdigit():
            raise ValueError(f"sample {key!r}: no 'view' field and the key does not end in _NNN")
        view_no = int(tail)
    for fld in ("azimuth", "elevation"):
        if not isinstance(r.get(fld), (int, float)):
            raise ValueError(f"sample {key!r}: field {fld!r} missing or not a number (got {r.get(fld)!r})")
    image = Image.open(io.BytesIO(png))
    image.load()
    tags = a.get("tags") or []
    if not isinstance(tags, list):
        raise ValueError(f"sample {key!r}: 'tags' must be a list (got {type(tags).__name__})")
    return View(
        key=key,
        asset_id=str(asset_id),
        view=int(view_no),
        image=image,
        azimuth=float(r["azimuth"]),
        elevation=float(r["elevation"]),
        name=a.get("name"),
        category=a.get("category"),
        label=a.get("label"),
        tags=tags,
        dims_cm=a.get("dims_cm"),
        obj_id=r.get("obj_id"),
        img_id=r.get("img_id"),
        path=r.get("path"),
    )

"""Held-out views: select them from the render manifest and read their images from the webdataset shards.

Only rows with split == "heldout" and a label are used; these objects were never seen by the bootstrap or by
training. Rows are ordered by (asset_id, view) so every model sees the same row order, which the paired
bootstrap relies on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ovt import shards
from ovt.io import read_jsonl

log = logging.getLogger(__name__)


@dataclass
class HeldoutViews:
    rows: list[dict]                # render-manifest rows, ordered by (asset_id, view)
    images: list[Image.Image]       # RGB, aligned with rows
    classnames: tuple[str, ...]     # vocabulary (label space)
    object_ids: tuple[str, ...]     # asset ids, index = object_index
    object_index: np.ndarray        # [N]
    target: np.ndarray              # [N]

    @property
    def elevation(self) -> np.ndarray:
        return np.array([float(r["elevation"]) for r in self.rows])

    @property
    def azimuth(self) -> np.ndarray:
        return np.array([float(r["azimuth"]) for r in self.rows])

    @property
    def canonical(self) -> np.ndarray:
        return np.array([bool(r["canonical"]) for r in self.rows])


def select_heldout_rows(manifest_rows: list[dict], max_objects: int | None = None) -> list[dict]:
    required = ("key", "shard", "asset_id", "view", "azimuth", "elevation", "canonical", "split", "label")
    for i, r in enumerate(manifest_rows[:1] + manifest_rows[-1:]):
        missing = [k for k in required if k not in r]
        if missing:
            raise ValueError(f"render manifest row {r.get('key', i)!r} lacks field(s) {missing}")
    rows = [r for r in manifest_rows if r["split"] == "heldout" and r["label"] is not None]
    rows.sort(key=lambda r: (r["asset_id"], int(r["view"])))
    if max_objects is not None:
        keep = sorted({r["asset_id"] for r in rows})[:max_objects]
        rows = [r for r in rows if r["asset_id"] in set(keep)]
    return rows


def vocabulary(assets_manifest: Path | None, rows: list[dict]) -> tuple[str, ...]:
    """Sorted label space: every label in the acquire manifest (train + held-out) when given, else the rows'."""
    labels: set[str] = set()
    if assets_manifest is not None and Path(assets_manifest).is_file():
        labels = {r["label"] for r in read_jsonl(assets_manifest) if r.get("label") is not None}
    labels |= {r["label"] for r in rows}
    return tuple(sorted(labels))


def read_shard_images(renders_dir: Path, rows: list[dict],
                      on_failure: Callable[[dict, str, str], None]) -> dict[str, Image.Image]:
    """{key: RGB image} for the given rows, reading each needed shard once; missing members are reported."""
    renders_dir = Path(renders_dir)
    by_shard: dict[str, set[str]] = {}
    for r in rows:
        by_shard.setdefault(r["shard"], set()).add(r["key"])
    images: dict[str, Image.Image] = {}
    bad: set[str] = set()
    for shard, keys in sorted(by_shard.items()):
        path = renders_dir / shard
        if shards.check(path) is None:
            for k in sorted(keys):
                on_failure({"key": k}, "incomplete_shard", str(path))
            continue
        # only the wanted members are read: train views cost nothing
        for key, members in shards.iter_samples(path, keys):
            data = members.get("png")
            if data is None:
                continue
            try:
                images[key] = shards.decode_rgb(data)
            except (OSError, ValueError) as err:
                bad.add(key)
                on_failure({"key": key}, "bad_image", f"{type(err).__name__}: {err}")
        for k in sorted(keys - images.keys() - bad):
            on_failure({"key": k}, "missing_member", f"{k}.png not in {shard}")
    return images


def load_heldout_views(renders_dir: Path, assets_manifest: Path | None, *, max_objects: int | None,
                       on_failure: Callable[[dict, str, str], None]) -> HeldoutViews:
    manifest = Path(renders_dir) / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"render manifest not found: {manifest}")
    rows = select_heldout_rows(read_jsonl(manifest), max_objects)
    if not rows:
        raise ValueError(f"no held-out labelled views in {manifest} (split == 'heldout' and label not null)")
    images = read_shard_images(Path(renders_dir), rows, on_failure)
    rows = [r for r in rows if r["key"] in images]
    if not rows:
        raise ValueError(f"none of the held-out views in {manifest} could be read from the shards")
    classnames = vocabulary(assets_manifest, rows)
    cls_index = {c: i for i, c in enumerate(classnames)}
    object_ids = tuple(sorted({r["asset_id"] for r in rows}))
    obj_index = {a: i for i, a in enumerate(object_ids)}
    return HeldoutViews(
        rows=rows,
        images=[images[r["key"]] for r in rows],
        classnames=classnames,
        object_ids=object_ids,
        object_index=np.array([obj_index[r["asset_id"]] for r in rows], dtype=np.int64),
        target=np.array([cls_index[r["label"]] for r in rows], dtype=np.int64),
    )

"""The views scored: one split's labelled rows of the render manifest, and their images from the shards.

`evaluate.split` picks the objects: `test` (manifest split "test"; older manifests call it "heldout") or
`validation`. Neither was seen by the bootstrap or by training. Rows are ordered by (asset_id, view) so every
model sees the same row order, which the paired intervals rely on.
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


# evaluate.split -> the manifest split values that mean it ("heldout" is the test split of older manifests)
SPLIT_VALUES: dict[str, tuple[str, ...]] = {"test": ("test", "heldout"), "validation": ("validation",)}


@dataclass
class EvalViews:
    rows: list[dict]  # render-manifest rows, ordered by (asset_id, view)
    images: list[Image.Image]  # RGB, aligned with rows
    classnames: tuple[str, ...]  # vocabulary (label space)
    object_ids: tuple[str, ...]  # asset ids, index = object_index
    object_index: np.ndarray  # [N]
    target: np.ndarray  # [N]

    @property
    def elevation(self) -> np.ndarray:
        return np.array([float(r["elevation"]) for r in self.rows])

    @property
    def azimuth(self) -> np.ndarray:
        return np.array([float(r["azimuth"]) for r in self.rows])

    @property
    def canonical(self) -> np.ndarray:
        return np.array([bool(r["canonical"]) for r in self.rows])


def select_rows(manifest_rows: list[dict], split: str = "test", max_objects: int | None = None) -> list[dict]:
    required = ("key", "shard", "asset_id", "view", "azimuth", "elevation", "canonical", "split", "label")
    for i, r in enumerate(manifest_rows[:1] + manifest_rows[-1:]):
        missing = [k for k in required if k not in r]
        if missing:
            raise ValueError(f"render manifest row {r.get('key', i)!r} lacks field(s) {missing}")
    if split not in SPLIT_VALUES:
        raise ValueError(f"evaluate.split must be one of {sorted(SPLIT_VALUES)}, got {split!r}")
    wanted = SPLIT_VALUES[split]
    rows = [r for r in manifest_rows if r["split"] in wanted and r["label"] is not None]
    rows.sort(key=lambda r: (r["asset_id"], int(r["view"])))
    if max_objects is not None:
        keep = sorted({r["asset_id"] for r in rows})[:max_objects]
        rows = [r for r in rows if r["asset_id"] in set(keep)]
    return rows


def vocabulary(assets_manifest: Path | None, rows: list[dict]) -> tuple[str, ...]:
    """Sorted label space: every label in the acquire manifest (all splits) when given, else the rows'."""
    labels: set[str] = set()
    if assets_manifest is not None and Path(assets_manifest).is_file():
        labels = {r["label"] for r in read_jsonl(assets_manifest) if r.get("label") is not None}
    labels |= {r["label"] for r in rows}
    return tuple(sorted(labels))


def read_shard_images(
    renders_dir: Path, rows: list[dict], on_failure: Callable[[dict, str, str], None]
) -> dict[str, Image.Image]:
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


def load_views(
    renders_dir: Path,
    assets_manifest: Path | None,
    *,
    split: str = "test",
    max_objects: int | None,
    on_failure: Callable[[dict, str, str], None],
) -> EvalViews:
    manifest = Path(renders_dir) / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"render manifest not found: {manifest}")
    rows = select_rows(read_jsonl(manifest), split, max_objects)
    if not rows:
        raise ValueError(
            f"no labelled {split} views in {manifest} (split in {list(SPLIT_VALUES[split])} and label not null)"
        )
    images = read_shard_images(Path(renders_dir), rows, on_failure)
    rows = [r for r in rows if r["key"] in images]
    if not rows:
        raise ValueError(f"none of the {split} views in {manifest} could be read from the shards")
    classnames = vocabulary(assets_manifest, rows)
    cls_index = {c: i for i, c in enumerate(classnames)}
    object_ids = tuple(sorted({r["asset_id"] for r in rows}))
    obj_index = {a: i for i, a in enumerate(object_ids)}
    return EvalViews(
        rows=rows,
        images=[images[r["key"]] for r in rows],
        classnames=classnames,
        object_ids=object_ids,
        object_index=np.array([obj_index[r["asset_id"]] for r in rows], dtype=np.int64),
        target=np.array([cls_index[r["label"]] for r in rows], dtype=np.int64),
    )

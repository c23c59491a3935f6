"""Reading the render stage's webdataset shards (docs/architecture.md: `<key>.png` + `<key>.json` per view).

Only complete shards count: a shard is complete when its side-car `shard-NNNNN.json` exists (written after the
tar). The side-car's `key` doubles as the shard's content key for feature caches; without one we hash the tar.

Per-view labels live in two places: the sample JSON holds what determines the pixels, while `split` and `label`
(derived downstream of rendering, changeable without re-rendering) are authoritative in the render stage's
`manifest.jsonl`. `view_metadata` merges the two, the manifest winning.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from ovt.io import iter_jsonl, sha256_file
from ovt.render.images import to_rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    tar: Path
    key: str  # content key of the shard (render stage's completion key, or the tar's sha256)


def list_shards(renders_dir: Path) -> tuple[list[Shard], list[Path]]:
    """(complete shards sorted by name, tars without a completion record)."""
    folder = Path(renders_dir) / "shards"
    if not folder.is_dir():
        raise FileNotFoundError(f"no render shards folder at {folder}")
    complete, incomplete = [], []
    for tar in sorted(folder.glob("*.tar")):
        record = tar.with_suffix(".json")
        if not record.is_file():
            incomplete.append(tar)
            continue
        key = json.loads(record.read_text()).get("key") or sha256_file(tar)
        complete.append(Shard(tar, str(key)))
    return complete, incomplete


def iter_samples(shard: Shard) -> Iterator[tuple[str, dict, bytes | None]]:
    """(sample key, metadata dict, png bytes or None) for every sample of one shard, in tar order."""
    import webdataset as wds

    for sample in wds.WebDataset(str(shard.tar), shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        meta = json.loads(sample["json"]) if "json" in sample else None
        if meta is None:
            raise ValueError(f"{shard.tar.name}: sample {key} has no .json member")
        yield key, meta, sample.get("png")


def load_manifest(renders_dir: Path) -> tuple[dict[str, dict], str | None]:
    """(per-view rows of `manifest.jsonl` by sample key, the file's sha256); ({}, None) when there is none."""
    path = Path(renders_dir) / "manifest.jsonl"
    if not path.is_file():
        return {}, None
    return {row["key"]: row for row in iter_jsonl(path)}, sha256_file(path)


def view_metadata(sample_meta: dict, manifest: dict[str, dict], key: str) -> dict:
    return {**sample_meta, **manifest.get(key, {})}


def load_rgb(png: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Decode a render; RGBA is composited onto `background` (a plain convert('RGB') would keep whatever colour
    the transparent pixels happen to hold, usually black)."""
    img = Image.open(io.BytesIO(png))
    img.load()
    return to_rgb(img, background)

"""Reading the render stage's webdataset shards (docs/architecture.md: `<key>.png` + `<key>.json` per view).

Only complete shards count: a shard is complete when its side-car `shard-NNNNN.json` exists (written after the
tar). The side-car's `key` doubles as the shard's content key for feature caches; without one we hash the tar.

Per-view labels live in two places: the sample JSON holds what determines the pixels, while `split` and `label`
(derived downstream of rendering, changeable without re-rendering) are authoritative in the render stage's
`manifest.jsonl`. `view_metadata` merges the two, the manifest winning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from ovt import shards
from ovt.io import iter_jsonl, sha256_file
from ovt.shards import Shard, decode_rgb as load_rgb  # noqa: F401  (bootstrap decodes through this name)

log = logging.getLogger(__name__)


def list_shards(renders_dir: Path) -> tuple[list[Shard], list[Path]]:
    """(complete shards sorted by name, tars that fail the shard integrity check)."""
    return shards.list_shards(Path(renders_dir) / "shards")


def iter_samples(shard: Shard) -> Iterator[tuple[str, dict, bytes | None]]:
    """(sample key, metadata dict, png bytes or None) for every sample of one shard, in tar order."""
    for key, members in shards.iter_samples(shard.tar):
        yield key, shards.sample_json(key, members, shard.tar.name), members.get("png")


def load_manifest(renders_dir: Path) -> tuple[dict[str, dict], str | None]:
    """(per-view rows of `manifest.jsonl` by sample key, the file's sha256); ({}, None) when there is none."""
    path = Path(renders_dir) / "manifest.jsonl"
    if not path.is_file():
        return {}, None
    return {row["key"]: row for row in iter_jsonl(path)}, sha256_file(path)


def view_metadata(sample_meta: dict, manifest: dict[str, dict], key: str) -> dict:
    return {**sample_meta, **manifest.get(key, {})}

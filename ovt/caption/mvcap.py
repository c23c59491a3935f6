"""MVCap: the paper's released record format, read and written, and our caption shards read as the same records.

Released format: `metadata.json` is one JSON list of `{path, caption, obj_id, img_id}` with
`path` relative (`./views/<uid>/026.png`) to an image root the user supplies (the release README warns paths may
need to be made absolute). Training uses `path`, `caption`, `obj_id` (views of one object share it).

Our data comes back as the same `MVCapRecord`s either from the export (`mvcap/metadata.json`, images under
`mvcap/views/` when `export_images` is on) or straight from the side-car caption shards plus render shards
(`read_caption_shards`), where the image is read out of the webdataset tar.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image

from ovt import shards
from ovt.io import atomic_write_text, read_jsonl

FIELDS = ("path", "caption", "obj_id", "img_id")


class MVCapFormatError(ValueError):
    """A metadata.json that does not follow the MVCap format; the message names the file, row and field."""


@dataclass
class MVCapRecord:
    path: str  # as written in metadata.json (relative, MVCap style)
    caption: str
    obj_id: int
    img_id: int
    image_path: Path | None = None  # resolved file, for records from a metadata.json + image root
    shard: Path | None = None  # render shard holding the image, for records read from our shards
    key: str | None = None  # webdataset sample key inside `shard`

    def to_row(self) -> dict:
        return {"path": self.path, "caption": self.caption, "obj_id": self.obj_id, "img_id": self.img_id}

    def load_image(self) -> Image.Image:
        if self.image_path is not None:
            with Image.open(self.image_path) as im:
                im.load()
                return im
        if self.shard is not None and self.key is not None:
            for _, members in shards.iter_samples(self.shard, keys={self.key}):
                if "png" in members:
                    return _open_png(members["png"])
            raise FileNotFoundError(f"{self.key}.png not in {self.shard}")
        raise FileNotFoundError(f"record {self.path!r} has no image location (no root given when reading)")


def write_metadata(path: str | Path, records: Iterable[MVCapRecord | dict]) -> int:
    """Write the MVCap `metadata.json` (one JSON list, one row per line for diff-friendliness), atomically."""
    rows = [r.to_row() if isinstance(r, MVCapRecord) else {k: r[k] for k in FIELDS} for r in records]
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    atomic_write_text(path, "[\n" + body + "\n]\n" if rows else "[]\n")
    return len(rows)


def _check_row(row: object, i: int, source: Path) -> MVCapRecord:
    if not isinstance(row, dict):
        raise MVCapFormatError(f"{source}: row {i} is a {type(row).__name__}, expected an object with {FIELDS}")
    missing = [f for f in ("path", "caption", "obj_id") if f not in row]
    if missing:
        raise MVCapFormatError(f"{source}: row {i} lacks field(s) {missing}")
    if not isinstance(row["path"], str) or not isinstance(row["caption"], str):
        raise MVCapFormatError(f"{source}: row {i}: 'path' and 'caption' must be strings")
    try:
        obj_id = int(row["obj_id"])
        # the original training code uses the row index as img_id when it is absent
        img_id = int(row.get("img_id", i))
    except (TypeError, ValueError):
        raise MVCapFormatError(
            f"{source}: row {i}: 'obj_id'/'img_id' must be integers (got {row.get('obj_id')!r}, {row.get('img_id')!r})"
        ) from None
    return MVCapRecord(path=row["path"], caption=row["caption"], obj_id=obj_id, img_id=img_id)


def resolve(path: str, root: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / path.removeprefix("./")


def read_metadata(
    metadata: str | Path, root: str | Path | None = None, *, check_images: bool = False
) -> list[MVCapRecord]:
    """Read a released-format `metadata.json`; image paths resolve against `root` (default: its folder).

    `check_images=True` fails on the first missing image, naming it (the release ships metadata for images that
    are not all downloadable: there is no Objaverse `views` archive on the hub).
    """
    metadata = Path(metadata)
    if not metadata.exists():
        raise FileNotFoundError(f"MVCap metadata not found: {metadata}")
    try:
        data = json.loads(metadata.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MVCapFormatError(f"{metadata}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise MVCapFormatError(f"{metadata}: expected a JSON list of {FIELDS}, got {type(data).__name__}")
    root = Path(root) if root is not None else metadata.parent
    records = []
    for i, row in enumerate(data):
        rec = _check_row(row, i, metadata)
        rec.image_path = resolve(rec.path, root)
        if check_images and not rec.image_path.exists():
            raise FileNotFoundError(f"{metadata}: row {i}: image {rec.image_path} does not exist (root {root})")
        records.append(rec)
    return records


def read_caption_shards(captions_dir: str | Path, renders_dir: str | Path) -> list[MVCapRecord]:
    """Our caption side-cars + render shards as MVCap records (image read from the render tar on demand)."""
    captions_dir, renders_dir = Path(captions_dir), Path(renders_dir)
    manifest = renders_dir / "manifest.jsonl"
    rows = {r["key"]: r for r in read_jsonl(manifest)} if manifest.exists() else {}
    records = []
    for side in sorted((captions_dir / "shards").glob("captions-*.jsonl")):
        tar = renders_dir / "shards" / f"shard-{side.stem.removeprefix('captions-')}.tar"
        for row in read_jsonl(side):
            r = rows.get(row["key"], {})
            asset_id, view = row["key"].rsplit("_", 1)
            records.append(
                MVCapRecord(
                    path=r.get("path") or f"./views/{asset_id}/{view}.png",
                    caption=row["caption"],
                    obj_id=int(r["obj_id"]) if r.get("obj_id") is not None else -1,
                    img_id=int(r["img_id"]) if r.get("img_id") is not None else -1,
                    shard=tar,
                    key=row["key"],
                )
            )
    return records


def iter_images(records: Iterable[MVCapRecord]) -> Iterator[tuple[MVCapRecord, Image.Image]]:
    """(record, image) pairs; records from one render shard are read in one pass over its tar."""
    by_shard: dict[Path, dict[str, MVCapRecord]] = {}
    for rec in records:
        if rec.shard is not None and rec.key is not None:
            by_shard.setdefault(rec.shard, {})[f"{rec.key}.png"] = rec
        else:
            yield rec, rec.load_image()
    for tar_path, wanted in by_shard.items():
        for key, members in shards.iter_samples(tar_path, keys={k.removesuffix(".png") for k in wanted}):
            found = wanted.get(f"{key}.png")
            if found is not None and "png" in members:
                yield found, _open_png(members["png"])


def _open_png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im

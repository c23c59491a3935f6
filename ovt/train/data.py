"""Training pairs: multi-view (MVCap-style) pairs from render shards + caption side-cars or an MVCap metadata.json,
and the "2D" mixing source (canonical views with class-name prompts, an image-text CSV, or a webdataset tar).

Images are addressed by `ImageRef` and decoded on demand: random access into the render tars goes through a
member index built once per tar (webdataset's streaming reader cannot seek, and the prefix cache and the mining pass
both need rows in object order).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ovt.io import iter_jsonl
from ovt.shards import SampleReader, decode_rgb, iter_samples, to_rgb
from ovt.train.config import DataParams
from ovt.train.rows import ImageRef, Pair, Rows, RowsBuilder

if TYPE_CHECKING:  # torch is imported where it is used: reading the data needs none of it
    import torch

log = logging.getLogger(__name__)

_IMG_EXT = (".png", ".jpg", ".jpeg", ".webp")
TRAIN_SPLIT = "train"


class DataError(ValueError):
    """Training inputs are missing or malformed; the message names the file and what is wrong."""


@dataclass
class TrainTable:
    """All training pairs, in columns (`ovt.train.rows`): rows [0, n_mv) are multi-view pairs sorted by object, the
    rest are 2D pairs."""

    rows: Rows
    n_mv: int
    objects: list[str]  # dense object index -> object id (asset_id or MVCap obj_id)
    sources: dict = field(default_factory=dict)  # provenance for the content key / model.json

    @classmethod
    def of(cls, mv: Sequence[Pair], twod: Sequence[Pair], objects: list[str], sources: dict | None = None):
        return cls(Rows.of([*mv, *twod]), len(mv), objects, dict(sources or {}))

    @property
    def pairs(self) -> Rows:
        return self.rows

    @property
    def mv(self) -> Rows:
        return self.rows[: self.n_mv]

    @property
    def twod(self) -> Rows:
        return self.rows[self.n_mv :]

    def copy(self) -> TrainTable:
        """A table a trainer may filter (it drops unreadable rows) without touching this one; the columns are
        shared (filtering builds new ones), so a copy costs nothing per row."""
        return TrainTable(self.rows, self.n_mv, list(self.objects), dict(self.sources))

    def keep(self, mask) -> None:
        """Keep only the rows where the boolean mask is set."""
        mask = np.asarray(mask, dtype=bool)
        self.rows, self.n_mv = self.rows.select(mask), int(mask[: self.n_mv].sum())

    def save(self, folder: str | Path) -> dict:
        return {"rows": self.rows.save(folder), "n_mv": self.n_mv, "objects": self.objects, "sources": self.sources}

    @classmethod
    def load(cls, folder: str | Path, meta: dict) -> TrainTable:
        return cls(Rows.load(folder, meta["rows"]), meta["n_mv"], meta["objects"], meta["sources"])

    def rows_of_object(self) -> list[torch.Tensor]:
        import torch

        obj = np.asarray(self.mv.obj, dtype=np.int64)
        order = np.argsort(obj, kind="stable")
        ends = np.searchsorted(obj[order], np.arange(len(self.objects)), side="right")
        return [torch.from_numpy(r) for r in np.split(order, ends[:-1])]


class ImageReader:
    """Decodes `ImageRef`s to RGB PIL images: files directly, shard members through the shard module's index."""

    def __init__(self) -> None:
        self._shards = SampleReader()

    def __call__(self, ref: ImageRef) -> Image.Image:
        if ref.member is None:
            with Image.open(ref.path) as im:
                return to_rgb(im)
        try:
            return decode_rgb(self._shards.read(ref.path, ref.member))
        except KeyError as err:
            raise DataError(str(err.args[0])) from None

    def close(self) -> None:
        self._shards.close()


def _in_bands(elev: float | None, bands) -> bool:
    if bands is None:
        return True
    if elev is None:
        return False
    return any(lo <= elev < hi for lo, hi in bands)


def _subsample(rows: list[dict], max_views: int | None) -> list[dict]:
    """Evenly spaced views of one object (deterministic), so quick runs still see the whole view sphere."""
    if max_views is None or len(rows) <= max_views:
        return rows
    step = len(rows) / max_views
    return [rows[int(i * step)] for i in range(max_views)]


def read_captions(captions_dir: Path) -> dict[str, str]:
    shard_dir = captions_dir / "shards"
    files = sorted(shard_dir.glob("captions-*.jsonl"))
    if not files:
        raise DataError(f"{shard_dir}: no captions-*.jsonl side-cars (run the caption stage first)")
    caps: dict[str, str] = {}
    for f in files:
        for row in iter_jsonl(f):
            if "key" not in row or "caption" not in row:
                raise DataError(f"{f}: caption row without 'key'/'caption': {row!r:.120}")
            caps[row["key"]] = row["caption"]
    return caps


def read_render_manifest(renders_dir: Path) -> list[dict]:
    path = renders_dir / "manifest.jsonl"
    if not path.exists():
        raise DataError(f"{path}: render manifest missing (run the render stage first)")
    rows = list(iter_jsonl(path))
    for need in ("key", "shard", "asset_id", "split"):
        if rows and need not in rows[0]:
            raise DataError(f"{path}: rows lack the field {need!r}")
    return rows


def render_pairs(renders_dir: Path, captions_dir: Path, cfg: DataParams) -> tuple[Rows, list[str], list[dict]]:
    """Multi-view pairs of the train split (optionally restricted to elevation bands) with their captions."""
    renders_dir, captions_dir = Path(renders_dir), Path(captions_dir)
    manifest = read_render_manifest(renders_dir)
    caps = read_captions(captions_dir)
    by_obj: dict[str, list[dict]] = {}
    missing = 0
    for row in manifest:
        # only training objects: validation and test objects (older manifests: "heldout") never train
        if row["split"] != TRAIN_SPLIT or not _in_bands(row.get("elevation"), cfg.elevation_bands):
            continue
        if cfg.labelled_only and not row.get("label"):
            continue
        if row["key"] not in caps:
            missing += 1
            continue
        by_obj.setdefault(row["asset_id"], []).append(row)
    if missing:
        log.warning("%d training views have no caption (dropped by the caption stage?); skipped", missing)
    objects = sorted(by_obj)
    pairs = RowsBuilder()
    for i, oid in enumerate(objects):
        for row in _subsample(sorted(by_obj[oid], key=lambda r: r["key"]), cfg.max_views_per_object):
            pairs.add(
                row["key"],
                caps[row["key"]],
                ImageRef(str(renders_dir / row["shard"]), f"{row['key']}.png"),
                obj=i,
                group=f"obj:{i}",
                source=(row["key"], row["shard"]),
            )
    if not len(pairs):
        raise DataError(
            f"{renders_dir}: no captioned train-split views"
            + (f" in elevation bands {cfg.elevation_bands}" if cfg.elevation_bands else "")
        )
    return pairs.build(), objects, manifest


def _mvcap_records(metadata: Path, root: Path) -> list[dict]:
    """{path, caption, obj_id, img_id, image_path} rows; the caption stage's reader validates the format."""
    try:
        from ovt.caption.mvcap import read_metadata
    except ImportError:  # the caption package is optional for training from a released metadata.json
        pass
    else:
        return [{**r.to_row(), "image_path": str(r.image_path)} for r in read_metadata(metadata, root)]
    with open(metadata, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise DataError(f"{metadata}: MVCap metadata must be a JSON list of {{path, caption, obj_id, img_id}}")
    for n, rec in enumerate(data):
        for need in ("path", "caption", "obj_id"):
            if need not in rec:
                raise DataError(f"{metadata}: record {n} lacks {need!r}")
        p = Path(rec["path"])
        rec["image_path"] = str(p if p.is_absolute() else root / rec["path"].removeprefix("./"))
    return data


def mvcap_pairs(metadata: Path, image_root: Path | None, cfg: DataParams) -> tuple[Rows, list[str]]:
    """Pairs from an MVCap `metadata.json`; `path`s like ./views/<uid>/026.png resolve against `image_root`."""
    metadata = Path(metadata)
    root = Path(image_root) if image_root else metadata.parent
    if cfg.elevation_bands is not None:
        # the held-out-viewpoint variants select views by pose, and MVCap's format ({path, caption, obj_id,
        # img_id}) records none: training them on every view would silently not hold any viewpoint out
        raise DataError(
            f"{metadata}: data.elevation_bands {cfg.elevation_bands} needs each view's elevation, "
            f"which MVCap metadata does not record; set train.heldout_viewpoints.enabled: false "
            f"for MVCap input (or train from render shards, whose manifest has the poses)"
        )
    records = _mvcap_records(metadata, root)
    by_obj: dict[str, list[dict]] = {}
    for rec in records:
        by_obj.setdefault(str(rec["obj_id"]), []).append(rec)
    objects = sorted(by_obj, key=lambda s: (len(s), s))
    del records  # the builder's lists below are the only copy kept while the columns are encoded
    pairs = RowsBuilder()
    for i, oid in enumerate(objects):
        for rec in _subsample(by_obj.pop(oid), cfg.max_views_per_object):
            # keyed by path: MVCap's img_id is not unique across objects (two images would share one activation)
            pairs.add(f"mvcap:{rec['path']}", rec["caption"], ImageRef(rec["image_path"]), obj=i, group=f"obj:{i}")
    if not len(pairs):
        raise DataError(f"{metadata}: no records")
    return pairs.build(), objects


def canonical_pairs(manifest: Iterable[dict], renders_dir: Path, prompt: str) -> Rows:
    """The embedded 2D source: canonical views of training objects with class-name prompts (the bootstrap's pairs)."""
    out = RowsBuilder()
    for row in manifest:
        if row["split"] != TRAIN_SPLIT or not row.get("canonical"):
            continue
        name = row.get("label") or row.get("name")
        if not name:
            continue
        text = prompt.format(name)
        out.add(
            f"2d:{row['key']}",
            text,
            ImageRef(str(Path(renders_dir) / row["shard"]), f"{row['key']}.png"),
            group=f"txt:{text}",
            source=(row["key"], row["shard"]),
        )
    return out.build()


def csv_pairs(path: Path) -> Rows:
    """FLYP-style CSV with columns `filepath,title` (paths relative to the CSV's folder)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"filepath", "title"} <= set(reader.fieldnames):
            raise DataError(f"{path}: need columns 'filepath' and 'title', got {reader.fieldnames}")
        rows = list(reader)
    out = RowsBuilder()
    for r in rows:
        p = Path(r["filepath"])
        image = ImageRef(str(p if p.is_absolute() else path.parent / p))
        out.add(f"2d:{r['filepath']}", r["title"], image, group=f"txt:{r['title']}")
    return out.build()


def webdataset_pairs(path: Path) -> Rows:
    """Image-text webdataset tar(s): members `<key>.{png,jpg,...}` with `<key>.txt` (caption) beside them."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: 2D webdataset not found")
    tars = sorted(path.glob("*.tar")) if path.is_dir() else [path]
    if not tars:
        raise DataError(f"{path}: no .tar files")
    out = RowsBuilder()
    for t in tars:
        for stem, members in iter_samples(t):
            img_ext = next((e for e in members if f".{e.lower()}" in _IMG_EXT), None)
            if img_ext is None or "txt" not in members:
                continue
            text = members["txt"].decode("utf-8").strip()
            out.add(f"2d:{t.name}/{stem}", text, ImageRef(str(t), f"{stem}.{img_ext}"), group=f"txt:{text}")
    return out.build()


def build_table(cfg: DataParams, renders_dir: Path | None, captions_dir: Path | None) -> TrainTable:
    manifest: list[dict] = []
    if cfg.mvcap_metadata is not None:
        mv, objects = mvcap_pairs(cfg.mvcap_metadata, cfg.mvcap_image_root, cfg)
        src = {"mvcap": str(cfg.mvcap_metadata)}
    else:
        if renders_dir is None or captions_dir is None:
            raise DataError("need renders_dir and captions_dir (or data.mvcap_metadata)")
        mv, objects, manifest = render_pairs(renders_dir, captions_dir, cfg)
        src = {"renders": str(renders_dir), "captions": str(captions_dir)}
    twod = RowsBuilder().build()
    twod_source = cfg.twod_resolved
    if cfg.twod_batch > 0 and cfg.twod_source == "auto" and twod_source == "none":
        log.info("MVCap input with data.twod_source auto: no 2D pairs mixed (csv/webdataset to mix some)")
    if cfg.twod_batch > 0 and twod_source != "none":
        if twod_source == "canonical":
            # a manifest only comes with renders_dir; the None check is for the type checker's benefit
            if not manifest or renders_dir is None:
                raise DataError("data.twod_source='canonical' needs render shards (not an MVCap metadata.json)")
            twod = canonical_pairs(manifest, renders_dir, cfg.twod_prompt)
        else:
            if cfg.twod_path is None:  # DataParams' validator rejects this already; also narrows the type
                raise DataError(f"data.twod_source={cfg.twod_source!r} needs data.twod_path")
            twod = csv_pairs(cfg.twod_path) if twod_source == "csv" else webdataset_pairs(cfg.twod_path)
        if not len(twod):
            raise DataError(f"data.twod_source={twod_source!r} yielded no pairs")
        src["twod"] = twod_source
    return TrainTable(Rows.concat([mv, twod]), len(mv), objects, src)


def load_table(cfg: DataParams, renders_dir: Path | None, captions_dir: Path | None) -> TrainTable:
    """`build_table` run in a short-lived child process, the table handed over as memory-mapped columns.

    Parsing a manifest or an MVCap metadata.json makes a few hundred bytes of short-lived Python objects per row; in
    the training process the allocator would keep most of that heap (freed, fragmented) for the rest of the run. In
    a child it is returned with the process, and the trainer's per-row state is the file-backed columns alone. The
    child is a fresh interpreter (`python -m ovt.train.data`), not a fork of a process holding torch's threads nor
    a multiprocessing spawn that re-imports the caller's main module; a `DataError` in it is raised here."""
    import os
    import subprocess
    import sys
    import tempfile

    import ovt

    with tempfile.TemporaryDirectory(prefix="ovt-table-") as tmp:
        spec = {
            "cfg": cfg.model_dump(mode="json"),
            "renders_dir": None if renders_dir is None else str(renders_dir),
            "captions_dir": None if captions_dir is None else str(captions_dir),
        }
        Path(tmp, "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        src = str(Path(ovt.__file__).resolve().parents[1])  # this very package, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(
            [sys.executable, "-m", "ovt.train.data", tmp], env=env, capture_output=True, text=True, check=False
        )
        for line in proc.stderr.splitlines():  # the child's log (e.g. views without a caption), relayed
            level, _, msg = line.partition(" ")
            log.log(logging.getLevelName(level) if level in ("WARNING", "ERROR") else logging.INFO, "%s", msg or line)
        result = Path(tmp, "result.json")
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"building the training table failed in its child process:\n{proc.stderr[-3000:]}")
        meta = json.loads(result.read_text(encoding="utf-8"))
        if "error" in meta:
            raise DataError(meta["error"])
        return TrainTable.load(tmp, meta)  # mapped before the folder goes: the mappings keep the files


def _child(folder: str) -> None:
    spec = json.loads(Path(folder, "spec.json").read_text(encoding="utf-8"))
    try:
        table = build_table(
            DataParams.model_validate(spec["cfg"]),
            None if spec["renders_dir"] is None else Path(spec["renders_dir"]),
            None if spec["captions_dir"] is None else Path(spec["captions_dir"]),
        )
        meta = table.save(folder)
    except DataError as err:
        meta = {"error": str(err)}
    Path(folder, "result.json").write_text(json.dumps(meta), encoding="utf-8")


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _child(sys.argv[1])

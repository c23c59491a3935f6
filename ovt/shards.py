"""The render stage's webdataset shards: one writer, one reader, one integrity check, for every stage.

Layout of a shards folder (docs/architecture.md, render -> data/renders/shards/):
  shard-NNNNN.tar   webdataset samples `<asset_id>_<view:03d>` with members `.png` and `.json`
  shard-NNNNN.json  completion record, written after the tar: `{key, tar_bytes, ...}`

A shard counts only when `check()` passes: its record exists and parses, carries a content `key`, and its
`tar_bytes` equals the tar's size (a tar rewritten or truncated after its record is not the recorded shard); the
writer may also demand the key it expects. Every reader goes through `list_shards()` or `check()`, so a half-written
shard is invisible to all stages alike.

Streaming reads use webdataset (`iter_samples`); random access by key (training batches, contact sheets) goes
through `SampleReader`, which indexes each tar's members once.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from PIL import Image

from ovt.io import atomic_write_json

SHARD_RE = re.compile(r"^shard-(\d+)\.tar$")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def record_path(tar: Path) -> Path:
    return Path(tar).with_suffix(".json")


@dataclass(frozen=True)
class Shard:
    """A complete shard: its tar and its completion record."""

    tar: Path
    record: dict

    @property
    def key(self) -> str:
        return str(self.record["key"])

    @property
    def index(self) -> int:
        m = SHARD_RE.match(self.tar.name)
        return int(m.group(1)) if m else -1

    @property
    def name(self) -> str:
        return self.tar.stem


# ---- the integrity check --------------------------------------------------------------------------------------------
def check(tar: str | Path, expected_key: str | None = None) -> dict | None:
    """The shard's completion record when the shard is complete (and has `expected_key`, if given), else None."""
    tar = Path(tar)
    try:
        record = json.loads(record_path(tar).read_text(encoding="utf-8"))
        size = tar.stat().st_size
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or "key" not in record or record.get("tar_bytes") != size:
        return None
    if expected_key is not None and record["key"] != expected_key:
        return None
    return record


def list_shards(shards_dir: str | Path) -> tuple[list[Shard], list[Path]]:
    """(complete shards sorted by name, tars that fail the check); raises when the folder does not exist."""
    folder = Path(shards_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"render shards folder not found: {folder} (run the render stage first)")
    complete, incomplete = [], []
    for tar in sorted(folder.glob("shard-*.tar")):
        if not SHARD_RE.match(tar.name):
            continue
        record = check(tar)
        if record is None:
            incomplete.append(tar)
        else:
            complete.append(Shard(tar, record))
    return complete, incomplete


# ---- writing --------------------------------------------------------------------------------------------------------
def write_samples(fh: IO[bytes], samples: Iterable[dict]) -> None:
    """Samples `{"__key__": k, "png": bytes, "json": dict, ...}` into an open binary file, as a webdataset tar.

    mtime is fixed, so identical samples give byte-identical tars whichever worker or machine wrote them."""
    import webdataset as wds

    sink = wds.TarWriter(fh, mtime=0)
    for s in samples:
        sink.write(s)
    sink.close()


def write_record(tar: str | Path, record: dict) -> dict:
    """Commit a finished tar: its completion record with `tar_bytes` (written last, atomically)."""
    record = {**record, "tar_bytes": Path(tar).stat().st_size}
    if "key" not in record:
        raise ValueError(f"{tar}: a completion record needs the shard's content 'key'")
    atomic_write_json(record_path(Path(tar)), record, indent=None)
    return record


# ---- reading --------------------------------------------------------------------------------------------------------
def iter_samples(tar: str | Path, keys: set[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Raw `(key, {ext: bytes})` samples of one shard in tar order; with `keys`, other members are never read.

    Every sample of the tar, in any process: the partition of shards across ranks and DataLoader workers is the
    caller's (e.g. `ovt.train.loader.ShardStream`), so webdataset's own splitters are off. By default they would
    hand a one-shard list to worker 0 only (losing the other workers' shards) and refuse to run at all when
    RANK/WORLD_SIZE are set (torchrun)."""
    import webdataset as wds

    select = None if keys is None else (lambda name: name.split(".", 1)[0] in keys)
    ds = wds.WebDataset(
        str(tar), shardshuffle=False, empty_check=False, select_files=select, nodesplitter=None, workersplitter=None
    )
    for sample in ds:
        yield sample["__key__"], {k: v for k, v in sample.items() if not k.startswith("__")}


def sample_json(key: str, members: dict[str, bytes], where: str | Path = "") -> dict:
    if "json" not in members:
        raise ValueError(f"{where}: sample {key} has no .json member")
    return json.loads(members["json"])


class SampleReader:
    """Random access to shard members (`read(tar, "<key>.png")`): one open handle and member index per tar.

    Pickles empty, so each DataLoader worker opens its own handles."""

    def __init__(self) -> None:
        self._tars: dict[str, tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]] = {}

    def read(self, tar: str | Path, member: str) -> bytes:
        tf, index = self._open(str(tar))
        info = index.get(member)
        if info is None:
            raise KeyError(f"{tar}: member {member!r} not in the shard")
        fh = tf.extractfile(info)
        assert fh is not None
        return fh.read()

    def _open(self, path: str):
        if path not in self._tars:
            tf = tarfile.open(path, "r")
            self._tars[path] = (tf, {m.name: m for m in tf.getmembers() if m.isfile()})
        return self._tars[path]

    def close(self) -> None:
        for tf, _ in self._tars.values():
            tf.close()
        self._tars.clear()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._tars = {}


# ---- decoding -------------------------------------------------------------------------------------------------------
def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A decoded render as 3-channel RGB for a model: transparent pixels composited onto `background` (the render
    stage's default white). Every consumer (features, bootstrap, train, evaluate) uses this one rule, so a
    transparent shard is seen the same way in training and in evaluation; a bare convert('RGB') would expose
    whatever colour the transparent pixels hold, usually black."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def decode_rgb(data: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return to_rgb(im, background)

"""Columnar training rows: the trainer's table held as a few numpy arrays instead of one Python object per row.

A `Pair` per row cost ~700 bytes of Python heap (a dataclass, its strings, a tuple), copied page by page into every
DataLoader worker as reference counts are touched. Here a row is a slot in typed columns: strings are one UTF-8
buffer plus offsets, repeated values (shard paths, groups) are codes into a small list of distinct values, and all of
it can be saved as .npy files and memory-mapped back (`Rows.save` / `Rows.load`; the train stage builds its tables
that way in a child process, `ovt.train.data.load_table`), so what the process holds per row is file-backed page
cache the kernel can drop and the workers share, not private heap. A `Pair` is built only when one row is asked for.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovt.io import atomic_writer


def caption_key(text: str) -> tuple[int, str]:
    """The order a caption bank is encoded in: by length (each encode batch pads to its longest caption, so similar
    lengths together waste no compute), then by text."""
    return len(text), text


@dataclass(frozen=True)
class ImageRef:
    path: str  # a tar (then `member` is set) or an image file
    member: str | None = None


@dataclass(frozen=True)
class Pair:
    key: str
    text: str
    image: ImageRef
    obj: int = -1  # dense object index for multi-view pairs; -1 for 2D pairs
    group: str = ""  # positives share a group (multi-positive ITC): "obj:<i>" or "txt:<caption>"
    source: tuple[str, str] | None = None  # render view (manifest key, shard): where the feature store holds it


class StrColumn(Sequence[str]):
    """Strings as one UTF-8 byte buffer and int64 end offsets: 8 bytes per row plus the text itself."""

    def __init__(self, data: np.ndarray, ends: np.ndarray, start: int = 0):
        self.data, self.ends, self.start = data, ends, start  # row i is data[ends[i-1] (or start) : ends[i]]

    @classmethod
    def of(cls, strings: Iterable[str]) -> StrColumn:
        parts = [s.encode("utf-8") for s in strings]
        ends = np.cumsum(np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts)))
        return cls(np.frombuffer(b"".join(parts), dtype=np.uint8), ends)

    def __len__(self) -> int:
        return len(self.ends)

    def _bounds(self, i: int) -> tuple[int, int]:
        return (int(self.ends[i - 1]) if i > 0 else self.start), int(self.ends[i])

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise ValueError("StrColumn slices must be contiguous")
            return StrColumn(self.data, self.ends[lo:hi], self._bounds(lo)[0] if lo < len(self) else 0)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        a, b = self._bounds(i % n)
        return bytes(self.data[a:b]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]

    def take(self, idx: np.ndarray) -> StrColumn:
        return StrColumn.of(self[int(i)] for i in idx)


class Rows(Sequence[Pair]):
    """Training pairs in columns; `rows[i]` is the i-th `Pair`, `rows.image(i)` only its image reference.

    Columns: key and text (strings); the image as a code into `folders` and a name: a tar and its member
    (`in_tar` 1), or an image file's folder (up to its last "/") and file name, so per-object folders of plain files
    (MVCap's layout) are stored once; obj (int32); group as a code into `groups`; source as the number of leading
    characters of `key` that are not the manifest key (-1: no source) and a code into `shards`."""

    _ARRAYS = ("obj", "folder_code", "in_tar", "group_code", "source_cut", "shard_code")

    def __init__(
        self, key, text, name, obj, folder_code, in_tar, group_code, source_cut, shard_code, folders, groups, shards
    ):
        self.key, self.text, self.name = key, text, name
        self.obj, self.folder_code, self.in_tar, self.group_code = obj, folder_code, in_tar, group_code
        self.source_cut, self.shard_code = source_cut, shard_code
        self.folders, self.groups, self.shards = folders, groups, shards
        self._caption_order: np.ndarray | None = None  # see `caption_order`

    @classmethod
    def of(cls, pairs: Iterable[Pair]) -> Rows:
        b = RowsBuilder()
        for p in pairs:
            b.add(p.key, p.text, p.image, obj=p.obj, group=p.group, source=p.source)
        return b.build()

    def __len__(self) -> int:
        return len(self.obj)

    def image(self, i: int) -> ImageRef:
        folder, name = self.folders[int(self.folder_code[i])], self.name[i]
        return ImageRef(folder, name) if self.in_tar[i] else ImageRef(folder + name)

    def source(self, i: int) -> tuple[str, str] | None:
        cut = int(self.source_cut[i])
        return None if cut < 0 else (self.key[i][cut:], self.shards[int(self.shard_code[i])])

    def caption_order(self) -> np.ndarray:
        """Rows holding each distinct caption once, in (length, text) order (what a caption bank encodes)."""
        if self._caption_order is None:
            first: dict[str, int] = {}
            for i, t in enumerate(self.text):
                first.setdefault(t, i)
            self._caption_order = np.array([first[t] for t in sorted(first, key=caption_key)], dtype=np.int64)
        return self._caption_order

    def sorted_texts(self) -> Iterator[str]:
        """The distinct captions in (length, text) order, read one at a time from the text column."""
        for i in self.caption_order():
            yield self.text[int(i)]

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise ValueError("Rows slices must be contiguous")
            return self._map(lambda c: c[lo:hi])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        return Pair(
            key=self.key[i],
            text=self.text[i],
            image=self.image(i),
            obj=int(self.obj[i]),
            group=self.groups[int(self.group_code[i])],
            source=self.source(i),
        )

    def __iter__(self) -> Iterator[Pair]:
        for i in range(len(self)):
            yield self[i]

    def _map(self, f) -> Rows:
        return Rows(
            f(self.key),
            f(self.text),
            f(self.name),
            f(self.obj),
            f(self.folder_code),
            f(self.in_tar),
            f(self.group_code),
            f(self.source_cut),
            f(self.shard_code),
            self.folders,
            self.groups,
            self.shards,
        )

    def select(self, keep: np.ndarray) -> Rows:
        """The rows where the boolean mask `keep` is set, in order."""
        idx = np.flatnonzero(np.asarray(keep, dtype=bool))

        def take(c):
            return c.take(idx) if isinstance(c, StrColumn) else np.ascontiguousarray(c[idx])

        return self._map(take)

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        """One table of several: string columns joined, codes re-based onto the merged value lists."""

        def strs(cols: list[StrColumn]) -> StrColumn:
            datas, ends, base = [], [], 0
            for c in cols:
                lo = c.start if len(c) else 0
                hi = int(c.ends[-1]) if len(c) else 0
                datas.append(np.asarray(c.data[lo:hi]))
                ends.append(np.asarray(c.ends, dtype=np.int64) - lo + base)
                base += hi - lo
            return StrColumn(
                np.concatenate(datas or [np.zeros(0, np.uint8)]), np.concatenate(ends or [np.zeros(0, np.int64)])
            )

        def codes(name: str, values: str) -> tuple[np.ndarray, list[str]]:
            merged: dict[str, int] = {}
            out = []
            for r in parts:
                remap = np.array([merged.setdefault(v, len(merged)) for v in getattr(r, values)] + [-1], np.int32)
                out.append(remap[np.asarray(getattr(r, name))])  # code -1 (no shard) maps to the trailing -1
            return np.concatenate(out or [np.zeros(0, np.int32)]), list(merged)

        folder_code, folders = codes("folder_code", "folders")
        group_code, groups = codes("group_code", "groups")
        shard_code, shards = codes("shard_code", "shards")
        return Rows(
            strs([r.key for r in parts]),
            strs([r.text for r in parts]),
            strs([r.name for r in parts]),
            np.concatenate([np.asarray(r.obj) for r in parts]),
            folder_code,
            np.concatenate([np.asarray(r.in_tar) for r in parts]),
            group_code,
            np.concatenate([np.asarray(r.source_cut) for r in parts]),
            shard_code,
            folders,
            groups,
            shards,
        )

    def _columns(self) -> dict[str, np.ndarray]:
        """Every array, string columns as their (rebased) buffer and end offsets."""
        out: dict[str, np.ndarray] = {}
        for name in ("key", "text", "name"):
            c: StrColumn = getattr(self, name)
            lo, hi = (c.start, int(c.ends[-1])) if len(c) else (0, 0)
            out[f"{name}.data"], out[f"{name}.ends"] = np.asarray(c.data[lo:hi]), np.asarray(c.ends) - lo
        return out | {a: np.asarray(getattr(self, a)) for a in self._ARRAYS} | {"caption_order": self.caption_order()}

    def save(self, folder: str | Path) -> dict:
        """Write the columns as .npy files into `folder`; returns what `Rows.load` needs besides them (the value
        lists). Each file is written atomically (`ovt.io.atomic_writer`)."""
        folder = Path(folder)
        for name, arr in self._columns().items():
            with atomic_writer(folder / f"{name}.npy") as fh:
                np.save(fh, np.ascontiguousarray(arr))
        return {"folders": self.folders, "groups": self.groups, "shards": self.shards}

    @classmethod
    def load(cls, folder: str | Path, lists: dict) -> Rows:
        """The rows `save` wrote, every column memory-mapped read-only (the files may be unlinked afterwards: the
        mappings keep them)."""
        folder = Path(folder)

        def arr(name: str) -> np.ndarray:
            path = folder / f"{name}.npy"
            out = np.load(path, mmap_mode="r")
            return out if out.size else np.load(path)  # an empty array is not worth (or able to be) mapped

        def col(name: str) -> StrColumn:
            return StrColumn(arr(f"{name}.data"), arr(f"{name}.ends"))

        rows = cls(
            col("key"),
            col("text"),
            col("name"),
            arr("obj"),
            arr("folder_code"),
            arr("in_tar"),
            arr("group_code"),
            arr("source_cut"),
            arr("shard_code"),
            lists["folders"],
            lists["groups"],
            lists["shards"],
        )
        rows._caption_order = arr("caption_order")
        return rows

    @property
    def nbytes(self) -> int:
        """Bytes of the columns (what `save` writes and `load` maps instead of holding)."""
        strs = sum(c.data.nbytes + c.ends.nbytes for c in (self.key, self.text, self.name))
        return strs + sum(getattr(self, a).nbytes for a in self._ARRAYS)


class RowsBuilder:
    """Appends pairs field by field (no `Pair` objects) and encodes them into `Rows` once."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.texts: list[str] = []
        self.names: list[str] = []
        self.obj: list[int] = []
        self.folder_code: list[int] = []
        self.in_tar: list[int] = []
        self.group_code: list[int] = []
        self.source_cut: list[int] = []
        self.shard_code: list[int] = []
        self._folders: dict[str, int] = {}
        self._groups: dict[str, int] = {}
        self._shards: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, text: str, image: ImageRef, *, obj: int = -1, group: str = "", source=None) -> None:
        self.keys.append(key)
        self.texts.append(text)
        if image.member is not None:
            folder, name = image.path, image.member
        else:  # split after the last "/": folder + name is the path, character for character
            cut = image.path.rfind("/") + 1
            folder, name = image.path[:cut], image.path[cut:]
        self.names.append(name)
        self.in_tar.append(image.member is not None)
        self.obj.append(obj)
        self.folder_code.append(self._folders.setdefault(folder, len(self._folders)))
        self.group_code.append(self._groups.setdefault(group, len(self._groups)))
        if source is None:
            self.source_cut.append(-1)
            self.shard_code.append(-1)
        else:
            skey, shard = source
            if not key.endswith(skey):
                raise ValueError(f"row {key!r}: source key {skey!r} must be the end of the row key")
            self.source_cut.append(len(key) - len(skey))
            self.shard_code.append(self._shards.setdefault(shard, len(self._shards)))

    def build(self) -> Rows:
        def ints(v: list[int], dtype=np.int32) -> np.ndarray:
            return np.array(v, dtype=dtype)

        return Rows(
            StrColumn.of(self.keys),
            StrColumn.of(self.texts),
            StrColumn.of(self.names),
            ints(self.obj),
            ints(self.folder_code),
            ints(self.in_tar, np.int8),
            ints(self.group_code),
            ints(self.source_cut),
            ints(self.shard_code),
            list(self._folders),
            list(self._groups),
            list(self._shards),
        )


def merge_sorted_texts(*streams: Iterable[str]) -> Iterator[str]:
    """Several `caption_key`-ordered caption streams as one in that order; a caption the streams share comes once
    from each (side by side: the consumer, `CaptionSource.ordered`, keeps one)."""
    return heapq.merge(*streams, key=caption_key)

"""Caption embeddings of the frozen text tower: computed once, on disk, shared by ranks, variants and runs.

`CaptionBank` embeds each distinct caption of a dataset once, rank-sharded: rank r encodes the captions whose
sorted hash position is r mod world and writes `emb-<r>-of-<w>.npy`; every rank reads rows back by position with
positioned reads, so no process holds (or encodes) the whole table. The trainer (`TextTable`, via one
`CaptionSource` per train stage run) and the streaming loader's workers (`ovt.train.loader`) both read through it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ovt.io import atomic_path, atomic_write_json, atomic_write_text, atomic_writer
from ovt.train.distributed import DistContext, barrier
from ovt.train.rows import caption_key

if TYPE_CHECKING:  # the model package is heavy; training only needs its interface for type checking
    from ovt.model.ovt_model import OVTModel
    from ovt.train.data import TrainTable

DTYPES = ("float16", "float32")
TEXT_CACHE = "text_cache"  # the train stage's caption banks: out_dir/text_cache/<text key>/


class CaptionBankError(ValueError):
    """A caption bank folder that cannot be read (a part missing, from another build, or truncated)."""


def caption_hash(text: str) -> int:
    """A stable 63-bit id of a caption (blake2b), the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def _hashes(texts: Iterable[str]) -> np.ndarray:
    return np.fromiter((caption_hash(t) for t in texts), dtype=np.int64)


def _part_ok(part: Path, part_key: Path, key: str, n_rows: int, dtype: str) -> bool:
    """Whether a rank's part is complete and from this build (its key file is written after it; a truncated or
    unreadable part is rebuilt, never fatal)."""
    if not (part.is_file() and part_key.is_file() and part_key.read_text() == key):
        return False
    try:
        arr = np.load(part, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return arr.ndim == 2 and arr.shape[0] == n_rows and arr.dtype == np.dtype(dtype)


class CaptionBank:
    """Frozen-text-tower embeddings of the distinct captions of a dataset, on disk, looked up by caption.

    Folder layout: `hashes.npy` (sorted distinct caption hashes, int64), `emb-<r>-of-<w>.npy` ([n_r, D] in the
    storage dtype, the rows at sorted positions r, r+w, ...) with `emb-<r>-of-<w>.key` (the build's key, written
    after the part) and `bank.json` (dim, count, world, dtype, content key), written last.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "bank.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: build the caption bank first (CaptionBank.build)")
        self.meta = json.loads(meta_path.read_text())
        self.dim, self.world, self.count = int(self.meta["dim"]), int(self.meta["world"]), int(self.meta["count"])
        self.dtype = np.dtype(self.meta.get("dtype", "float16"))
        # 8 bytes per distinct caption (37 MB for 4.6 M), memory-mapped read-only: shared by the page cache
        self.hashes = np.load(self.folder / "hashes.npy", mmap_mode="r")
        self._fds: dict[int, tuple[int, int]] | None = None  # per process: part -> (fd, data offset)

    # pickled into DataLoader workers: file handles are per process
    def __getstate__(self):
        return {"folder": self.folder}

    def __setstate__(self, state):
        self.__init__(state["folder"])

    def __del__(self):
        for fd, _ in (getattr(self, "_fds", None) or {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    @staticmethod
    def key_of(hashes: np.ndarray, encoder_key: str, dtype: str = "float16") -> str:
        tag = b"" if dtype == "float16" else f"|{dtype}".encode()  # float16 keys predate the option
        return hashlib.sha256(hashes.tobytes() + encoder_key.encode() + tag).hexdigest()[:24]

    @classmethod
    def build(
        cls,
        folder: str | Path,
        captions: Callable[[], Iterable[str]],
        encode: Callable[[list[str]], torch.Tensor],
        *,
        encoder_key: str,
        rank: int = 0,
        world: int = 1,
        batch_size: int = 256,
        barrier: Callable[[], None] | None = None,
        dtype: str = "float16",
    ) -> CaptionBank:
        """Embed every distinct caption once. `captions()` is iterated twice (hashes, then texts) so the caption
        list itself is never held; a rank encodes its captions in that order, in batches of `batch_size` (give
        them sorted by length and each batch pads to similar lengths). `encode(texts) -> [n, D]` is the frozen
        text tower; rows are stored as `dtype` ("float16", or "float32" to keep the encoder's numbers exactly).
        Reruns with the same captions, `encoder_key` and dtype reuse the folder; each rank writes only its own part,
        so a build killed midway redoes only the parts it had not finished. With several ranks pass `barrier` (all
        ranks): rank 0 writes the record once every part is written, and all ranks wait for it. The folder must be
        shared by the ranks (the run's work folder).
        """
        if dtype not in DTYPES:
            raise ValueError(f"CaptionBank.build: dtype {dtype!r} is not one of {DTYPES}")
        folder = Path(folder)
        hashes = np.unique(_hashes(captions()))
        if hashes.size == 0:
            raise ValueError("CaptionBank.build: no captions")
        key = cls.key_of(hashes, encoder_key, dtype)
        meta_path = folder / "bank.json"
        part, part_key = folder / f"emb-{rank}-of-{world}.npy", folder / f"emb-{rank}-of-{world}.key"
        mine = np.arange(rank, hashes.size, world)
        if not _part_ok(part, part_key, key, mine.size, dtype):
            folder.mkdir(parents=True, exist_ok=True)
            part_key.unlink(missing_ok=True)  # a part rewritten under an old key file must not look done
            seen = np.zeros(hashes.size, dtype=bool)
            batch: list[tuple[int, str]] = []
            # the part is filled in place in a memory-mapped .npy beside it, then renamed (removed if the build
            # fails): the rank's share of the table ([n/world, D], 2 KB a caption at D 512 in float32) never sits
            # in the process's own memory
            with atomic_path(part) as tmp:
                rows: Any = None  # the part's np.memmap once the first batch gives the width

                def flush():
                    nonlocal rows
                    if not batch:
                        return
                    emb = encode([t for _, t in batch]).detach().float().cpu().numpy()
                    if rows is None:
                        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(mine.size, emb.shape[1]))
                    rows[[p // world for p, _ in batch]] = emb
                    batch.clear()

                for text in captions():
                    pos = int(np.searchsorted(hashes, caption_hash(text)))
                    if pos % world != rank or seen[pos]:
                        continue
                    seen[pos] = True
                    batch.append((pos, text))
                    if len(batch) >= batch_size:
                        flush()
                flush()
                if rows is None:  # this rank owns no caption (more ranks than captions): an empty part, right width
                    with open(tmp, "wb") as fh:
                        np.save(fh, np.zeros((0, int(encode(["a"]).shape[-1])), dtype=dtype))
                else:
                    rows.flush()
                    del rows
            atomic_write_text(part_key, key)  # after the part: a killed build never leaves a part that looks done
        if barrier is not None:
            barrier()
        if rank == 0 and not (meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key):
            for other in folder.glob("emb-*-of-*.*"):  # parts of an earlier build with another number of ranks
                if not other.name.endswith(f"-of-{world}.npy") and not other.name.endswith(f"-of-{world}.key"):
                    other.unlink(missing_ok=True)
            with atomic_writer(folder / "hashes.npy") as fh:
                np.save(fh, hashes)
            dim = int(np.load(part, mmap_mode="r").shape[1])
            atomic_write_json(
                meta_path,
                {
                    "key": key,
                    "dim": dim,
                    "count": int(hashes.size),
                    "world": world,
                    "encoder_key": encoder_key,
                    "dtype": dtype,
                },
            )
        if barrier is not None:
            barrier()
        return cls(folder)

    def index(self, texts: Sequence[str]) -> np.ndarray:
        """Sorted positions of `texts` (int64); a caption not in the bank is an error naming it."""
        h = _hashes(texts)
        pos = np.searchsorted(self.hashes, h).clip(max=self.count - 1)
        bad = self.hashes[pos] != h
        if bad.any():
            raise KeyError(f"caption not in the bank: {texts[int(np.argmax(bad))]!r}")
        return pos

    def _open(self):
        if self._fds is None:
            fds = {}
            for r in range(self.world):
                path = self.folder / f"emb-{r}-of-{self.world}.npy"
                key_path = path.with_suffix(".key")
                if not key_path.is_file() or key_path.read_text() != self.meta["key"]:
                    raise CaptionBankError(
                        f"{self.folder}: part {path.name} is missing or from another build "
                        f"(every one of the {self.world} ranks must run CaptionBank.build)"
                    )
                with open(path, "rb") as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    read_header(fh)
                    offset = fh.tell()
                fds[r] = (os.open(path, os.O_RDONLY), offset)
            self._fds = fds
        return self._fds

    def rows(self, positions: np.ndarray | Sequence[int]) -> torch.Tensor:
        """[n, D] float32 embeddings at sorted positions, read with pread: nothing stays mapped in this process."""
        fds = self._open()
        width = self.dim * self.dtype.itemsize
        out = np.empty((len(positions), self.dim), dtype=self.dtype)
        for i, p in enumerate(np.asarray(positions, dtype=np.int64).tolist()):
            fd, off = fds[p % self.world]
            buf = os.pread(fd, width, off + (p // self.world) * width)
            if len(buf) != width:
                raise CaptionBankError(f"{self.folder}: caption row {p} is truncated")
            out[i] = np.frombuffer(buf, dtype=self.dtype)
        return torch.from_numpy(out if self.dtype == np.float32 else out.astype(np.float32))

    def lookup(self, texts: Sequence[str]) -> torch.Tensor:
        return self.rows(self.index(texts))


# ---- the trainer's captions -----------------------------------------------------------------------------------------
ENCODE_BATCH = 256


class CaptionSource:
    """Where one run's caption bank lives and which captions it holds; built on first use, then shared.

    The train stage makes one per run (every table it trains on, so all variants and seed replicates read the same
    bank and each caption is encoded once); a later run with the same text tower and captions finds the bank on
    disk and encodes nothing. `folder` must be shared by the ranks; `key` names the text tower (base weights and
    model block): a different key or caption set rebuilds the folder."""

    def __init__(self, folder: str | Path, key: str, captions: Callable[[], Iterable[str]]):
        self.folder, self.key, self.captions = Path(folder), key, captions
        self._bank: CaptionBank | None = None

    @property
    def built(self) -> bool:
        return self._bank is not None

    def ordered(self) -> Iterator[str]:
        """The captions, each once, in `caption_key` order, streamed: `captions()` must yield them in that order,
        duplicates side by side (`Rows.sorted_texts` and `merge_sorted_texts` do), so no list of every caption is
        ever held."""
        prev: tuple[int, str] | None = None
        for text in self.captions():
            k = caption_key(text)
            if prev is not None and k <= prev:
                if k == prev:
                    continue
                raise ValueError(f"{self.folder}: captions must come sorted by (length, text); {text!r} came late")
            prev = k
            yield text

    def bank(self, model: OVTModel, ctx: DistContext) -> CaptionBank:
        """The bank, built (rank-sharded, every rank must call) or reused; `model.encode_text` is the text tower,
        called as it comes (its mode, full precision) on batches of similar-length captions."""
        if self._bank is None:
            self._bank = CaptionBank.build(
                self.folder,
                self.ordered,
                # cache=False: the bank is the one copy (the model would keep every caption it encoded)
                lambda batch: model.encode_text(batch, cache=False).float().cpu(),
                encoder_key=self.key,
                rank=ctx.rank,
                world=ctx.world,
                batch_size=ENCODE_BATCH,
                barrier=lambda: barrier(ctx),
                dtype="float32",  # the trainer's numbers are the text tower's, unrounded
            )
        return self._bank


class TextTable:
    """The frozen text tower's embedding of each table row's caption, read from the run's caption bank.

    Per row it holds only the caption's bank position (8 bytes); a batch's embeddings are read from disk (the page
    cache) and moved to the device."""

    def __init__(self, model: OVTModel, table: TrainTable, source: CaptionSource, ctx: DistContext):
        self.bank = source.bank(model, ctx)
        self.device = ctx.device
        self.dim = self.bank.dim
        # caption identity per row (equal positions: the very same caption)
        self.row_caption = torch.from_numpy(self.bank.index(table.rows.text))

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.bank.rows(self.row_caption[idx].numpy()).to(self.device)

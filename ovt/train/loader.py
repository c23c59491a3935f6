"""A streaming input for paper scale: webdataset shards -> worker processes (decode + preprocess) -> batches.

The Trainer does not read through this module (its input is `ovt.train.inputs`); the benchmarks
`bench_train_memory.py` and `bench_gpu_train.py` drive it.

Why not the trainer's random-access reader: at MVCap scale (millions of views) the training process cannot decode
images one at a time, nor hold a per-image cache. Here every worker streams whole shards (sequential tar reads),
decodes and preprocesses in its own process, and hands over only finished batches; host memory per rank is
O(batch x prefetch), independent of the dataset size.

Order is a pure function of (seed, epoch, rank, world, num_workers): the shard order is a seeded permutation per
epoch, shard i goes to slot i mod (world x workers), and each slot shuffles its samples in a bounded buffer with its
own seeded generator. DataLoader reads its workers round-robin, so the batch sequence is reproducible, and every
sample of the epoch is seen exactly once across all ranks and workers (no drop_last inside a worker).

Captions: `CaptionBank` embeds each distinct caption once (rank-sharded: rank r encodes the captions whose sorted
position is r mod world) into `.npy` files every rank reads back by position; workers look a batch's rows up with
positioned reads, so neither the training process nor the workers ever hold the whole table.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ovt import shards
from ovt.io import atomic_write_json, atomic_write_text, atomic_writer

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


class LoaderError(ValueError):
    """A shard sample the loader cannot use; the message names the shard and the sample."""


# ---- captions: embedded once, shared --------------------------------------------------------------------------------
def caption_hash(text: str) -> int:
    """A stable 63-bit id of a caption (blake2b), the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def _hashes(texts: Iterable[str]) -> np.ndarray:
    return np.fromiter((caption_hash(t) for t in texts), dtype=np.int64)


class CaptionBank:
    """Frozen-text-tower embeddings of the distinct captions of a dataset, on disk, looked up by caption.

    Folder layout: `hashes.npy` (sorted distinct caption hashes, int64), `emb-<r>-of-<w>.npy` (float16 [n_r, D],
    the rows at sorted positions r, r+w, ...) and `bank.json` (dim, count, world, content key), written last.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "bank.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: build the caption bank first (CaptionBank.build)")
        self.meta = json.loads(meta_path.read_text())
        self.dim, self.world, self.count = int(self.meta["dim"]), int(self.meta["world"]), int(self.meta["count"])
        # 8 bytes per distinct caption (37 MB for 4.6 M), memory-mapped read-only: shared by the page cache
        self.hashes = np.load(self.folder / "hashes.npy", mmap_mode="r")
        self._fds: dict[int, tuple[int, int]] | None = None  # per process: part -> (fd, data offset)

    # pickled into DataLoader workers: file handles are per process
    def __getstate__(self):
        return {"folder": self.folder}

    def __setstate__(self, state):
        self.__init__(state["folder"])

    @staticmethod
    def key_of(hashes: np.ndarray, encoder_key: str) -> str:
        return hashlib.sha256(hashes.tobytes() + encoder_key.encode()).hexdigest()[:24]

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
    ) -> CaptionBank:
        """Embed every distinct caption once. `captions()` is iterated twice (hashes, then texts) so the caption
        list itself is never held; `encode(texts) -> [n, D]` is the frozen text tower. Reruns with the same
        captions and `encoder_key` reuse the folder; each rank writes only its own part. With several ranks pass
        `barrier` (all ranks): rank 0 writes the record once every part is written, and all ranks wait for it.
        The folder must be shared by the ranks (the run's work folder).
        """
        folder = Path(folder)
        hashes = np.unique(_hashes(captions()))
        if hashes.size == 0:
            raise ValueError("CaptionBank.build: no captions")
        key = cls.key_of(hashes, encoder_key)
        meta_path = folder / "bank.json"
        part, part_key = folder / f"emb-{rank}-of-{world}.npy", folder / f"emb-{rank}-of-{world}.key"
        if not (part.is_file() and part_key.is_file() and part_key.read_text() == key):
            mine = np.arange(rank, hashes.size, world)
            rows: np.ndarray | None = None
            seen = np.zeros(hashes.size, dtype=bool)
            batch: list[tuple[int, str]] = []

            def flush():
                nonlocal rows
                if not batch:
                    return
                emb = encode([t for _, t in batch]).detach().float().cpu().numpy()
                if rows is None:
                    rows = np.zeros((mine.size, emb.shape[1]), dtype=np.float16)
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
            if rows is None:  # this rank owns no caption (more ranks than captions): an empty part of the right width
                rows = np.zeros((0, int(encode(["a"]).shape[-1])), dtype=np.float16)
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_writer(part) as fh:
                np.save(fh, rows)
            atomic_write_text(part_key, key)  # after the part: a killed build never leaves a part that looks done
        if barrier is not None:
            barrier()
        if rank == 0 and not (meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key):
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
                    "dtype": "float16",
                },
            )
        if barrier is not None:
            barrier()
        return cls(folder)

    def index(self, texts: Sequence[str]) -> np.ndarray:
        """Sorted positions of `texts`; a caption not in the bank is an error naming it."""
        h = _hashes(texts)
        pos = np.searchsorted(self.hashes, h).clip(max=self.count - 1)
        bad = self.hashes[pos] != h
        if bad.any():
            raise KeyError(f"caption not in the bank: {texts[int(np.argmax(bad))]!r}")
        return pos

    def _open(self):
        if self._fds is None:
            self._fds = {}
            for r in range(self.world):
                path = self.folder / f"emb-{r}-of-{self.world}.npy"
                key_path = path.with_suffix(".key")
                if not key_path.is_file() or key_path.read_text() != self.meta["key"]:
                    raise LoaderError(
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
                self._fds[r] = (os.open(path, os.O_RDONLY), offset)
        return self._fds

    def rows(self, positions: np.ndarray) -> torch.Tensor:
        """[n, D] float32 embeddings at sorted positions, read with pread: nothing stays mapped in this process."""
        fds = self._open()
        width = self.dim * 2
        out = np.empty((len(positions), self.dim), dtype=np.float16)
        for i, p in enumerate(np.asarray(positions, dtype=np.int64).tolist()):
            fd, off = fds[p % self.world]
            buf = os.pread(fd, width, off + (p // self.world) * width)
            if len(buf) != width:
                raise LoaderError(f"{self.folder}: caption row {p} is truncated")
            out[i] = np.frombuffer(buf, dtype=np.float16)
        return torch.from_numpy(out.astype(np.float32))

    def lookup(self, texts: Sequence[str]) -> torch.Tensor:
        return self.rows(self.index(texts))


# ---- batches --------------------------------------------------------------------------------------------------------
class Batch(NamedTuple):
    images: torch.Tensor  # [B, 3, H, W] preprocessed
    texts: list[str]  # captions
    objects: list[str]  # object ids (asset_id / MVCap obj_id, as strings)
    views: torch.Tensor  # [B] long, view index within the object (-1 when the sample has none)
    keys: list[str]  # sample keys (for failures and determinism checks)
    text_emb: torch.Tensor  # [B, D] float32 caption embeddings from the bank, or [B, 0] without one


def sample_fields(key: str, members: dict[str, bytes], where: str, captions: Mapping[str, str] | None):
    """(image bytes, caption, object id, view) of one shard sample.

    Render shards carry captions in side-cars (pass `captions`, key -> caption); MVCap-style shards carry
    `caption`, `obj_id` and optionally `view` in the sample's json."""
    meta = shards.sample_json(key, members, where)
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    if ext is None:
        raise LoaderError(f"{where}: sample {key} has no image member ({', '.join(IMAGE_EXTS)})")
    caption = captions.get(key) if captions is not None else meta.get("caption")
    if caption is None:
        raise LoaderError(f"{where}: sample {key} has no caption (neither in its json nor in the side-cars)")
    obj = meta.get("asset_id", meta.get("obj_id"))
    if obj is None:
        raise LoaderError(f"{where}: sample {key} has no object id ('asset_id' or 'obj_id' in its json)")
    view = meta.get("view", -1)
    return members[ext], str(caption), str(obj), int(view)


class _Collate:
    """Runs in the worker: stacks the batch and looks its captions up in the bank (a class, so it pickles)."""

    def __init__(self, bank: CaptionBank | None):
        self.bank = bank

    def __call__(self, rows: list[tuple]) -> Batch:
        images, texts, objs, views, keys = zip(*rows)
        emb = self.bank.lookup(list(texts)) if self.bank is not None else torch.zeros(len(rows), 0)
        return Batch(
            torch.stack(images), list(texts), list(objs), torch.tensor(views, dtype=torch.long), list(keys), emb
        )


def fixed_mmap_threshold(nbytes: int = 128 << 10) -> bool:
    """Pin glibc's mmap threshold in a worker so batch-sized buffers are mmap'd and handed back when freed.

    glibc raises the threshold to the size of each large block freed (up to 32 MB), after which batch-sized
    tensors come from the brk heap, which fragments and never shrinks: measured, a worker's heap grew ~0.6 MB per
    batch without end (O(dataset) per epoch); with the threshold fixed it stays flat. No-op off glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-3, nbytes))  # M_MMAP_THRESHOLD; setting it also disables the dynamic raise
    except (OSError, AttributeError):
        return False


class ShardStream(IterableDataset):
    """Preprocessed samples of a list of shard tars, partitioned by (rank, worker), reproducibly shuffled."""

    def __init__(
        self,
        tars: Sequence[str | Path],
        preprocess: Callable,
        *,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle_buffer: int = 1000,
        captions: Mapping[str, str] | None = None,
        shuffle: bool = True,
    ):
        if not tars:
            raise LoaderError("ShardStream: no shards")
        self.tars = [str(t) for t in tars]
        self.preprocess, self.seed, self.rank, self.world = preprocess, seed, rank, world
        self.shuffle_buffer, self.captions, self.shuffle = max(1, shuffle_buffer), captions, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shards_of(self, worker: int, workers: int) -> list[str]:
        order = list(range(len(self.tars)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        slot, slots = self.rank * workers + worker, self.world * workers
        return [self.tars[i] for i in order[slot::slots]]

    def _raw(self, tars: list[str]) -> Iterator[tuple]:
        for tar in tars:
            for key, members in shards.iter_samples(tar):  # the whole shard, in any worker or rank
                yield (key, *sample_fields(key, members, tar, self.captions))

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # threads per worker: decoding is per-sample work; torch's intra-op pool would oversubscribe the cores
        if info is not None:
            torch.set_num_threads(1)
            fixed_mmap_threshold()
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 7919 + self.rank * workers + worker)
        buf: list[tuple] = []
        for item in self._raw(self.shards_of(worker, workers)):
            if not self.shuffle:
                yield self._prepare(item)
                continue
            buf.append(item)
            if len(buf) >= self.shuffle_buffer:
                j = rng.randrange(len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield self._prepare(buf.pop())
        rng.shuffle(buf)
        for item in buf:
            yield self._prepare(item)

    def _prepare(self, item: tuple) -> tuple:
        key, data, caption, obj, view = item
        try:
            image = self.preprocess(shards.decode_rgb(data))
        except Exception as err:
            raise LoaderError(f"sample {key}: cannot decode/preprocess its image: {err}") from err
        return image, caption, obj, view, key


@dataclass
class LoaderSpec:
    batch_size: int = 512
    num_workers: int = 8
    shuffle_buffer: int = 1000
    prefetch_factor: int = 2
    pin_memory: bool | None = None  # None: pin when CUDA is available


def make_loader(
    tars: Sequence[str | Path],
    preprocess: Callable,
    spec: LoaderSpec,
    *,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    bank: CaptionBank | None = None,
    captions: Mapping[str, str] | None = None,
    shuffle: bool = True,
) -> DataLoader:
    """A DataLoader of `Batch`es over `tars`; call `loader.dataset.set_epoch(e)` before each epoch."""
    ds = ShardStream(
        tars,
        preprocess,
        seed=seed,
        rank=rank,
        world=world,
        shuffle_buffer=spec.shuffle_buffer,
        captions=captions,
        shuffle=shuffle,
    )
    pin = torch.cuda.is_available() if spec.pin_memory is None else spec.pin_memory
    extra: dict[str, Any] = {"prefetch_factor": spec.prefetch_factor} if spec.num_workers > 0 else {}
    return DataLoader(
        ds,
        batch_size=spec.batch_size,
        num_workers=spec.num_workers,
        collate_fn=_Collate(bank),
        pin_memory=pin,
        drop_last=False,
        **extra,
    )


def shard_tars(shards_dir: str | Path) -> list[Path]:
    """The complete shards of a folder (the shard module's integrity check); a half-written shard is an error."""
    complete, incomplete = shards.list_shards(shards_dir)
    if incomplete:
        raise LoaderError(f"{shards_dir}: incomplete shards {[t.name for t in incomplete][:5]}")
    if not complete:
        raise LoaderError(f"{shards_dir}: no complete shards")
    return [s.tar for s in complete]

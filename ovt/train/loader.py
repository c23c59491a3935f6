"""A streaming input for paper scale: webdataset shards -> worker processes (decode + preprocess) -> batches.

Shared with the Trainer: the caption bank (`ovt.train.captions.CaptionBank`); the Trainer's caption embeddings
come from one, as this loader's `Batch.text_emb` does. Not shared: the Trainer reads its images through
`ovt.train.inputs`, not through this stream (the benchmarks `bench_train_memory.py` and `bench_gpu_train.py`
drive the stream).

Why not the trainer's random-access reader: at MVCap scale (millions of views) the training process cannot decode
images one at a time, nor hold a per-image cache. Here every worker streams whole shards (sequential tar reads),
decodes and preprocesses in its own process, and hands over only finished batches; host memory per rank is
O(batch x prefetch), independent of the dataset size.

Order is a pure function of (seed, epoch, rank, world, num_workers): the shard order is a seeded permutation per
epoch, shard i goes to slot i mod (world x workers), and each slot shuffles its samples in a bounded buffer with its
own seeded generator. DataLoader reads its workers round-robin, so the batch sequence is reproducible, and every
sample of the epoch is seen exactly once across all ranks and workers (no drop_last inside a worker).

Captions: each batch's workers look its captions up in a `CaptionBank` (every distinct caption embedded once,
rank-sharded, on disk) with positioned reads, so neither the training process nor the workers hold the whole table.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ovt import shards
from ovt.train.captions import CaptionBank

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


class LoaderError(ValueError):
    """A shard sample the loader cannot use; the message names the shard and the sample."""


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

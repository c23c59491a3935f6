"""What the trainable tail sees: prefix activations (the frozen part of the image tower, computed once) or images.

Render views are read from the shared feature store (the features stage ran the frozen tower once per view); views
it does not hold (MVCap or 2D images from elsewhere) are encoded once here by `model.image_prefix`, shared across
variants. When the store holds no prefix (the adapted blocks start at the stem, or it would not fit in memory),
or `data.cache_prefix` is off, or the in-memory prefix would exceed `data.max_prefix_gib`, every step decodes its
images and runs the full tower (`full forward`). Then the images of a planned sequence of batches (an epoch's steps,
the mining pass; and the pass that encodes the prefix) are decoded and preprocessed by DataLoader worker processes
(`data.num_workers`) ahead of the forward that needs them, so decoding overlaps compute instead of stalling it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ovt.features.store import prefix_refusal
from ovt.train.config import DataParams
from ovt.train.data import ImageReader, TrainTable
from ovt.train.distributed import DistContext, all_reduce_sum_
from ovt.train.rows import Rows

if TYPE_CHECKING:  # the model package is heavy; training only needs its interface for type checking
    from ovt.model.ovt_model import OVTModel

log = logging.getLogger(__name__)
MAX_PREFIX = "train.data.max_prefix_gib"  # the setting a refused in-memory prefix names


class Augment:
    """The official augmentation: RandomRotation(90) then RandomAffine(translate 0.1), on the PIL image."""

    def __init__(self):
        from torchvision import transforms as T

        self.tf = T.Compose([T.RandomRotation(90), T.RandomAffine(degrees=0, translate=(0.1, 0.1))])

    def __call__(self, im, seed: int):
        with torch.random.fork_rng(devices=[]):  # per-(epoch,row) seed: independent of resume position
            torch.manual_seed(seed)
            return self.tf(im)


def augment_seed(seed: int, epoch: int, row: int) -> int:
    """The augmentation seed of table row `row` in `epoch`: a function of the position only, so a resumed run,
    and a worker process, draw the very transform the in-process path would."""
    return seed * 1_000_003 + epoch * 10_007 + row


class RowImages(Dataset):
    """Map-style dataset over table rows: item (row, augment epoch or None) -> (preprocessed image, row).

    Runs in DataLoader workers; each worker opens its own shard reader (open tar handles do not cross processes).
    The rows are columns (memory-mapped as the train stage loads them, `ovt.train.data.load_table`): forked workers
    share them, nothing per row is copied into a worker."""

    def __init__(self, rows: Rows, preprocess: Callable, augment: Augment | None, seed: int):
        self.rows, self.preprocess, self.augment, self.seed = rows, preprocess, augment, seed
        self._reader: ImageReader | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, row: int, epoch: int | None) -> torch.Tensor:
        if self._reader is None:
            self._reader = ImageReader()
        im = self._reader(self.rows.image(row))
        if self.augment is not None and epoch is not None:
            im = self.augment(im, augment_seed(self.seed, epoch, row))
        return self.preprocess(im)

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[torch.Tensor, int]:
        row, epoch = item
        return self.image(row, epoch), row

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class _Plan:
    """The DataLoader's batch sampler: the batches the trainer announced next (replaced before each `iter`), kept as
    the row tensors the trainer passed (8 bytes a row); a batch's (row, epoch) items are made when the loader draws
    it, a few batches ahead of the steps, so an epoch's plan never exists as Python objects per row."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.epoch: int | None = None

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        for b in self.batches:
            yield [(r, self.epoch) for r in b.tolist()]

    def __len__(self) -> int:
        return len(self.batches)


class _Pending:
    """The announced rows not yet handed out, in order: a cursor over the plan's tensors."""

    def __init__(self, batches: Sequence[torch.Tensor] = (), epoch: int | None = None) -> None:
        self.batches, self.epoch = list(batches), epoch
        self.left = sum(b.numel() for b in self.batches)
        self._i = self._off = 0  # the next row is batches[_i][_off]

    def __bool__(self) -> bool:
        return self.left > 0

    def take(self, idx: torch.Tensor, epoch: int | None) -> None:
        """Consume the next `len(idx)` rows, which must be `idx` of `epoch` (one walk: the rows it passes are the
        head it checks, and the cursor moves only once they match)."""
        parts, i, off, n = [], self._i, self._off, idx.numel()
        while n > 0 and i < len(self.batches):
            part = self.batches[i][off : off + n]
            parts.append(part)
            n -= part.numel()
            off += part.numel()
            if off == self.batches[i].numel():
                i, off = i + 1, 0
        head = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        if epoch != self.epoch or not torch.equal(head, idx.to(head.dtype)):
            raise RuntimeError(
                f"inputs asked for rows {idx[:8].tolist()}... of epoch {epoch} but the announced plan continues "
                f"with {head[:8].tolist()}... of epoch {self.epoch}"
            )
        self._i, self._off, self.left = i, off, self.left - idx.numel()


def _worker_init(_: int) -> None:
    # decoding is per-image work: torch's intra-op pool in every worker would oversubscribe the cores
    from ovt.train.loader import fixed_mmap_threshold

    torch.set_num_threads(1)
    fixed_mmap_threshold()


def resolve_workers(num_workers: int | None, device: torch.device, world: int) -> int:
    """`data.num_workers`, with None resolved: no workers without CUDA, else the host's cores shared by its ranks
    (one left for the training process), at most 8."""
    if num_workers is not None:
        return num_workers
    if device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // max(1, world) - 1))


class TrainInputs:
    """Rows of a TrainTable -> tensors for `model.image_tail` (cached) or `model.encode_image` (full forward)."""

    def __init__(
        self,
        model: OVTModel,
        table: TrainTable,
        cfg: DataParams,
        *,
        store: Any,
        ctx: DistContext,
        seed: int,
        shared: dict,
        on_failure: Callable[[str, Exception], None],
        progress: bool = False,
    ):
        self.model, self.table, self.cfg, self.store, self.ctx = model, table, cfg, store, ctx
        self.seed, self.shared, self.on_failure, self.progress = seed, shared, on_failure, progress
        self.reader = ImageReader()
        self.augment = Augment() if cfg.augment else None
        if store is not None and store.first_adapted != getattr(model, "first_adapted", store.first_adapted):
            raise ValueError(
                f"{store.folder}: features were computed for first adapted block {store.first_adapted}, "
                f"the model adapts from block {model.first_adapted}: rerun the features stage"
            )
        store_prefix = store is not None and store.has_prefix
        if cfg.cache_prefix and store is not None and not store_prefix:
            log.info(
                "feature store holds no prefix (%s): full forward every step",
                store.info.get("prefix_reason") or "not cached",
            )
        self.cached = cfg.cache_prefix and (store is None or store_prefix)
        self.prefix: torch.Tensor | None = None
        self.prefix_reason = ""  # why the prefix was refused at prepare() ("" when cached or never asked for)
        self.seconds = 0.0
        self.num_workers = resolve_workers(cfg.num_workers, ctx.device, ctx.world)
        self._loader: DataLoader | None = None
        self._plan = _Plan()
        self._stream: Iterator | None = None
        self._pending = _Pending()  # the plan's rows not yet handed out, in order
        self._buf: tuple[torch.Tensor, list[int]] | None = None  # a fetched batch's images and rows not yet taken

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    # ---- preparation ---------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Drop unreadable rows (once per table, shared), then build the prefix tensor when caching."""
        t0 = time.perf_counter()
        if "table" in self.shared:
            self.table.rows, self.table.n_mv = self.shared["table"]
        else:
            self._drop_unreadable()
            self.shared["table"] = (self.table.rows, self.table.n_mv)
        if self.cached:
            if "prefix" not in self.shared:
                reason = self._refuse_prefix()
                self.shared["prefix"] = None if reason else self._build_prefix()
                self.shared["prefix_reason"] = reason
                if reason:
                    log.warning("not caching the image prefix: %s; full forward every step", reason)
            self.prefix = self.shared["prefix"]
            if self.prefix is None:
                self.cached = False
                self.prefix_reason = self.shared["prefix_reason"]
        self.seconds = time.perf_counter() - t0

    @torch.no_grad()
    def _refuse_prefix(self) -> str:
        """Estimate the prefix tensor `_build_prefix` would hold (every row, float32) from one row's activation
        shape: the feature store's record when it holds the prefix (the tower need not run), else one probe."""
        first = getattr(self.model, "first_adapted", 1)
        if first <= 0:
            return prefix_refusal(first, 0, 0, self.cfg.max_prefix_gib, MAX_PREFIX)
        shape = self.store.info.get("prefix_shape") if self.store is not None and self.store.has_prefix else None
        if shape is None:  # no store to read it from: one row through the frozen tower
            # the probe must not move the random streams the run draws from (a stochastic frozen layer would)
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                shape = self.model.image_prefix(self.images(torch.tensor([0]))).shape[1:]
        per_image = int(torch.Size(shape).numel()) * 4
        return prefix_refusal(first, per_image, len(self.table.pairs), self.cfg.max_prefix_gib, MAX_PREFIX)

    def _in_store(self) -> set[str] | None:
        """Manifest keys the feature store holds (None without a store)."""
        if self.store is None:
            return None
        keys: set[str] = set()
        from pathlib import Path

        for shard in self.table.rows.shards:
            try:
                keys.update(self.store._record(Path(shard).stem)["keys"])
            except FileNotFoundError:
                pass
        return keys

    def _drop_unreadable(self) -> None:
        """Rows the store lacks (the features stage could not decode them) or that do not decode leave the table
        and go to failures.jsonl."""
        rows = self.table.rows
        held = self._in_store()
        bad = torch.zeros(len(rows), dtype=torch.bool)
        for i in range(self.ctx.rank, len(rows), self.ctx.world):
            source = rows.source(i)
            if held is not None and source is not None:
                if source[0] not in held:
                    bad[i] = True
                    self.on_failure(rows.key[i], KeyError(f"no features for {source[0]} in {self.store.folder}"))
                continue
            try:
                self.reader(rows.image(i))
            except Exception as err:  # noqa: BLE001 - any decode error is a per-item failure
                bad[i] = True
                self.on_failure(rows.key[i], err)
        all_reduce_sum_(bad, self.ctx)
        if bad.any():
            self.table.keep(~bad.numpy())
        if not self.table.n_mv:
            raise RuntimeError("no readable multi-view training image")

    @torch.no_grad()
    def _build_prefix(self) -> torch.Tensor:
        """One activation per table row: from the store where it has the view, else encoded once (rank-sharded)."""
        pairs = self.table.pairs
        from_store = [(i, p.source) for i, p in enumerate(pairs) if self.store is not None and p.source is not None]
        rows: dict[int, torch.Tensor] = {}
        if from_store:
            pre, _ = self.store.lookup([{"key": key, "shard": shard} for _, (key, shard) in from_store], prefix=True)
            rows.update(zip((i for i, _ in from_store), pre))
        cache = self.shared.setdefault("prefix_store", {})  # image key -> activation, every table of the run
        todo_keys = list(dict.fromkeys(p.key for i, p in enumerate(pairs) if i not in rows and p.key not in cache))
        if todo_keys:
            cache.update(self._encode(todo_keys))
        for i, p in enumerate(pairs):
            if i not in rows:
                rows[i] = cache[p.key]
        return torch.stack([rows[i] for i in range(len(pairs))]).float()

    def _encode(self, keys: list[str]) -> dict[str, torch.Tensor]:
        first: dict[str, int] = {}
        for i, p in enumerate(self.table.pairs):
            first.setdefault(p.key, i)
        todo = [first[k] for k in keys]
        mine = torch.tensor(todo[self.ctx.rank :: self.ctx.world], dtype=torch.long)
        bs, world, buf = self.cfg.encode_batch, self.ctx.world, None
        if self.num_workers > 0:  # decoding, not the frozen prefix, bounds this pass on an accelerator
            self._announce(list(mine.split(bs)), None)
        with tqdm(
            total=len(todo), desc="cache image prefix", unit="img", disable=not (self.progress and self.ctx.is_main)
        ) as bar:
            for s in range(0, mine.numel(), bs):
                rows = mine[s : s + bs]
                x = self._take(rows, None) if self._pending else self.images(rows)
                out = self.model.image_prefix(x).float().cpu()
                if buf is None:
                    buf = torch.zeros((len(todo), *out.shape[1:]))
                slot = s * world + self.ctx.rank  # position of rows[0] in `todo`
                buf[slot : slot + rows.numel() * world : world] = out
                bar.update(rows.numel() * world)
        if buf is None:  # a rank with no rows still needs the shape for the reduction
            shape = self.model.image_prefix(self.images(torch.tensor([todo[0]]))).shape[1:]
            buf = torch.zeros((len(todo), *shape))
        self._close_loader()  # the steps read the prefix from here on: the workers have nothing left to decode
        buf = all_reduce_sum_(buf, self.ctx)
        return {k: buf[j] for j, k in enumerate(keys)}

    # ---- per step ------------------------------------------------------------------------------------------------
    def images(self, idx: torch.Tensor, *, augment_epoch: int | None = None) -> torch.Tensor:
        rows = self.table.rows
        ims = []
        for i in idx.tolist():
            im = self.reader(rows.image(i))
            if self.augment is not None and augment_epoch is not None:
                im = self.augment(im, augment_seed(self.seed, augment_epoch, i))
            ims.append(self.model.preprocess(im))
        return torch.stack(ims).to(self.device)

    @property
    def streaming(self) -> bool:
        """Whether full-forward images come from worker processes (a plan is worth announcing)."""
        return not self.cached and self.num_workers > 0

    def plan(self, batches: Sequence[torch.Tensor], epoch: int | None = None) -> None:
        """Announce the rows the next `__call__`s will ask for, in order (any split into calls), so the workers
        decode them ahead. A no-op when cached or without workers; a new plan drops what is left of the last."""
        if self.streaming:
            self._announce(batches, epoch)

    def _announce(self, batches: Sequence[torch.Tensor], epoch: int | None) -> None:
        self._plan.batches, self._plan.epoch = [b for b in batches if b.numel()], epoch
        self._pending = _Pending(self._plan.batches, epoch)
        self._buf = None
        self._stream = iter(self._dataloader()) if self._pending else None

    def _dataloader(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(
                RowImages(self.table.rows, self.model.preprocess, self.augment, self.seed),
                batch_sampler=self._plan,
                num_workers=self.num_workers,
                persistent_workers=True,  # one start per run, not per epoch and mining pass
                pin_memory=self.device.type == "cuda",
                worker_init_fn=_worker_init,
                # workers draw their base seed from this, not from the global stream the training steps use
                generator=torch.Generator().manual_seed(self.seed),
            )
        return self._loader

    def _take(self, idx: torch.Tensor, epoch: int | None) -> torch.Tensor:
        """The next `len(idx)` planned images (which must be rows `idx` of `epoch`), from the workers' batches."""
        self._pending.take(idx, epoch)
        parts, need = [], idx.numel()
        while need:
            if self._buf is None:
                if self._stream is None:
                    raise RuntimeError("inputs: the announced plan is exhausted")
                ims, rows = next(self._stream)
                self._buf = (ims, rows.tolist())
            ims, rows = self._buf
            k = min(need, len(rows))
            parts.append(ims[:k])
            self._buf = (ims[k:], rows[k:]) if k < len(rows) else None
            need -= k
        if not self._pending:
            self._stream = None
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        return x.to(self.device, non_blocking=True)

    def __call__(self, idx: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        """Inputs of table rows `idx`; `epoch` seeds the augmentation (None: un-augmented, as mining wants).

        Full forward: the planned rows come from the workers (in plan order); unplanned calls decode here."""
        if self.cached:
            if self.prefix is None:
                raise RuntimeError("TrainInputs.prepare() must run before cached inputs are read")
            return self.prefix[idx].to(self.device, non_blocking=True)
        if self._pending:
            return self._take(idx, epoch)
        return self.images(idx, augment_epoch=epoch)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The model's image embedding of inputs returned by `__call__`."""
        return self.model.image_tail(x) if self.cached else self.model.encode_image(x)

    def close(self) -> None:
        self.reader.close()
        self._close_loader()

    def _close_loader(self) -> None:
        self._stream, self._buf, self._pending = None, None, _Pending()
        if self._loader is not None:
            it = getattr(self._loader, "_iterator", None)
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()  # persistent workers would otherwise live until the loader is collected
            self._loader = None

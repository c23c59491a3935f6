"""What the trainable tail sees: prefix activations (the frozen part of the image tower, computed once) or images.

Render views are read from the shared feature store (the features stage ran the frozen tower once per view); views
it does not hold (MVCap or 2D images from elsewhere) are encoded once here by `model.image_prefix`, shared across
variants. When the store holds no prefix (the adapted blocks start at the stem, or it would not fit in memory),
or `data.cache_prefix` is off, every step decodes its images and runs the full tower (`full forward`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from ovt.train.config import DataParams
from ovt.train.data import ImageReader, TrainTable
from ovt.train.distributed import DistContext, all_reduce_sum_

if TYPE_CHECKING:  # the model package is heavy; training only needs its interface for type checking
    from ovt.model.ovt_model import OVTModel

log = logging.getLogger(__name__)


class Augment:
    """The official augmentation: RandomRotation(90) then RandomAffine(translate 0.1), on the PIL image."""

    def __init__(self):
        from torchvision import transforms as T

        self.tf = T.Compose([T.RandomRotation(90), T.RandomAffine(degrees=0, translate=(0.1, 0.1))])

    def __call__(self, im, seed: int):
        with torch.random.fork_rng(devices=[]):  # per-(epoch,row) seed: independent of resume position
            torch.manual_seed(seed)
            return self.tf(im)


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
        self.seconds = 0.0

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    # ---- preparation ---------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Drop unreadable rows (once per table, shared), then build the prefix tensor when caching."""
        t0 = time.perf_counter()
        if "table" in self.shared:
            self.table.mv, self.table.twod = self.shared["table"]
        else:
            self._drop_unreadable()
            self.shared["table"] = (self.table.mv, self.table.twod)
        if self.cached:
            if "prefix" not in self.shared:
                self.shared["prefix"] = self._build_prefix()
            self.prefix = self.shared["prefix"]
        self.seconds = time.perf_counter() - t0

    def _in_store(self) -> set[str] | None:
        """Manifest keys the feature store holds (None without a store)."""
        if self.store is None:
            return None
        keys: set[str] = set()
        shards = {p.source[1] for p in self.table.pairs if p.source is not None}
        from pathlib import Path

        for shard in shards:
            try:
                keys.update(self.store._record(Path(shard).stem)["keys"])
            except FileNotFoundError:
                pass
        return keys

    def _drop_unreadable(self) -> None:
        """Rows the store lacks (the features stage could not decode them) or that do not decode leave the table
        and go to failures.jsonl."""
        pairs = self.table.pairs
        held = self._in_store()
        bad = torch.zeros(len(pairs), dtype=torch.bool)
        for i in range(self.ctx.rank, len(pairs), self.ctx.world):
            p = pairs[i]
            if held is not None and p.source is not None:
                if p.source[0] not in held:
                    bad[i] = True
                    self.on_failure(p.key, KeyError(f"no features for {p.source[0]} in {self.store.folder}"))
                continue
            try:
                self.reader(p.image)
            except Exception as err:  # noqa: BLE001 - any decode error is a per-item failure
                bad[i] = True
                self.on_failure(p.key, err)
        all_reduce_sum_(bad, self.ctx)
        if bad.any():
            n_mv = len(self.table.mv)
            self.table.mv = [p for i, p in enumerate(self.table.mv) if not bad[i]]
            self.table.twod = [p for i, p in enumerate(self.table.twod) if not bad[n_mv + i]]
        if not self.table.mv:
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
        with tqdm(
            total=len(todo), desc="cache image prefix", unit="img", disable=not (self.progress and self.ctx.is_main)
        ) as bar:
            for s in range(0, mine.numel(), bs):
                rows = mine[s : s + bs]
                out = self.model.image_prefix(self.images(rows)).float().cpu()
                if buf is None:
                    buf = torch.zeros((len(todo), *out.shape[1:]))
                slot = s * world + self.ctx.rank  # position of rows[0] in `todo`
                buf[slot : slot + rows.numel() * world : world] = out
                bar.update(rows.numel() * world)
        if buf is None:  # a rank with no rows still needs the shape for the reduction
            shape = self.model.image_prefix(self.images(torch.tensor([todo[0]]))).shape[1:]
            buf = torch.zeros((len(todo), *shape))
        buf = all_reduce_sum_(buf, self.ctx)
        return {k: buf[j] for j, k in enumerate(keys)}

    # ---- per step ------------------------------------------------------------------------------------------------
    def images(self, idx: torch.Tensor, *, augment_epoch: int | None = None) -> torch.Tensor:
        pairs = self.table.pairs
        ims = []
        for i in idx.tolist():
            im = self.reader(pairs[i].image)
            if self.augment is not None and augment_epoch is not None:
                im = self.augment(im, self.seed * 1_000_003 + augment_epoch * 10_007 + i)
            ims.append(self.model.preprocess(im))
        return torch.stack(ims).to(self.device)

    def __call__(self, idx: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        """Inputs of table rows `idx`; `epoch` seeds the augmentation (None: un-augmented, as mining wants)."""
        if self.cached:
            if self.prefix is None:
                raise RuntimeError("TrainInputs.prepare() must run before cached inputs are read")
            return self.prefix[idx].to(self.device, non_blocking=True)
        return self.images(idx, augment_epoch=epoch)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The model's image embedding of inputs returned by `__call__`."""
        return self.model.image_tail(x) if self.cached else self.model.encode_image(x)

    def close(self) -> None:
        self.reader.close()


class TextTable:
    """The frozen text tower's embedding of every distinct caption of the table, computed once per run."""

    def __init__(self, model: OVTModel, table: TrainTable, shared: dict, device: torch.device):
        pairs = table.pairs
        texts = sorted({p.text for p in pairs})
        index = {t: i for i, t in enumerate(texts)}
        store = shared.setdefault("text_store", {})
        # by length: each batch pads to its longest caption, so similar lengths together waste no compute
        missing = sorted((t for t in texts if t not in store), key=len)
        for i in range(0, len(missing), 256):
            chunk = missing[i : i + 256]
            store.update(zip(chunk, model.encode_text(chunk).float().cpu()))
        self.emb = torch.stack([store[t] for t in texts]).to(device)
        self.row_text = torch.tensor([index[p.text] for p in pairs], dtype=torch.long)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.emb[self.row_text[idx]]

"""The minimax training loop (one variant): max step once per epoch, min step every batch.

Data order is a pure function of (seed, epoch, step), never of hidden iterator state, so a resumed run replays
exactly the batches an uninterrupted run would have drawn. On CPU the default path caches the frozen
`image_prefix` activations once and trains `image_tail` only (no augmentation: the prefix is deterministic);
`data.augment` takes the slower full-image path meant for GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from ovt.io import append_jsonl
from ovt.train import checkpoint as ckpt
from ovt.train.config import TrainParams
from ovt.train.data import ImageReader, TrainTable
from ovt.train.distributed import DistContext, all_reduce_sum_
from ovt.train.losses import itc_loss, positives_matrix, vc_loss
from ovt.train.mining import MinedSet, mine_from_embeddings, nearest_other_centre, stream_objects
from ovt.train.optim import build_optimizer, build_scheduler
from ovt.train.tracking import Tracker

log = logging.getLogger(__name__)


class _Forward(nn.Module):
    """What DDP wraps: the trainable image path plus the logit scale, so every trainable tensor is used."""

    def __init__(self, model: nn.Module, cached: bool):
        super().__init__()
        self.model = model
        self.cached = cached

    def forward(self, x: torch.Tensor):
        z = self.model.image_tail(x) if self.cached else self.model.encode_image(x)
        return z, self.model.logit_scale


def set_mode(model: nn.Module, mode: str) -> None:
    """eval (official) or train; batch-norm of the frozen tower stays in eval either way (its statistics are
    part of the frozen base, and updating them would change the model outside the adapters)."""
    model.train(mode == "train")
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


class _Augment:
    """The official augmentation: RandomRotation(90) then RandomAffine(translate 0.1), on the PIL image."""

    def __init__(self):
        from torchvision import transforms as T

        self.tf = T.Compose([T.RandomRotation(90), T.RandomAffine(degrees=0, translate=(0.1, 0.1))])

    def __call__(self, im, seed: int):
        with torch.random.fork_rng(devices=[]):  # per-(epoch,row) seed: independent of resume position
            torch.manual_seed(seed)
            return self.tf(im)


class Trainer:
    def __init__(self, model: nn.Module, table: TrainTable, cfg: TrainParams, *, variant: str, seed: int,
                 work_dir: Path, ctx: DistContext, key: str, failures: Path | None = None,
                 on_step: Callable[[int], None] | None = None, run_name: str | None = None,
                 shared_cache: dict | None = None):
        self.model, self.table, self.cfg, self.variant = model, table, cfg, variant
        self.seed, self.ctx, self.key, self.on_step = seed, ctx, key, on_step
        self.work_dir = Path(work_dir)
        self.failures = failures
        # the frozen prefix and text tower are the same for every variant: the stage passes one dict to all
        self.shared = shared_cache
        self.lam = cfg.loss.lam if variant == "ovt" else 0.0
        self.use_vc = variant == "ovt" and self.lam > 0
        self.device = ctx.device
        self.cached = cfg.data.cache_prefix
        self.reader = ImageReader()
        self.augment = _Augment() if cfg.data.augment else None
        torch.manual_seed(seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        model.to(self.device)
        self.tracker = Tracker(ctx.is_main, cfg.tracking.mlflow, cfg.tracking.experiment,
                               run_name or f"{variant}-seed{seed}", {"variant": variant, "seed": seed,
                                                                      **cfg.model_dump(mode="json")})
        self.timings: dict[str, float] = {"mining_s": 0.0, "train_s": 0.0, "cache_s": 0.0}

    # ------------------------------------------------------------------ inputs
    def _log_failure(self, item: str, err: Exception) -> None:
        log.warning("skipping %s: %s", item, err)
        if self.failures is not None and self.ctx.is_main:
            append_jsonl(self.failures, {"stage": "train", "item": item, "error": type(err).__name__,
                                         "detail": str(err)[:500]})

    def _images(self, idx: torch.Tensor, *, augment_epoch: int | None = None) -> torch.Tensor:
        pairs = self.table.pairs
        ims = []
        for i in idx.tolist():
            im = self.reader(pairs[i].image)
            if self.augment is not None and augment_epoch is not None:
                im = self.augment(im, self.seed * 1_000_003 + augment_epoch * 10_007 + i)
            ims.append(self.model.preprocess(im))
        return torch.stack(ims).to(self.device)

    def _drop_unreadable(self) -> None:
        """Decode every image once (rank-sharded); rows that fail go to failures.jsonl and leave the table."""
        pairs = self.table.pairs
        bad = torch.zeros(len(pairs), dtype=torch.bool)
        for i in range(self.ctx.rank, len(pairs), self.ctx.world):
            try:
                self.reader(pairs[i].image)
            except Exception as err:  # noqa: BLE001 - any decode error is a per-item failure
                bad[i] = True
                self._log_failure(pairs[i].key, err)
        all_reduce_sum_(bad, self.ctx)
        if bad.any():
            n_mv = len(self.table.mv)
            self.table.mv = [p for i, p in enumerate(self.table.mv) if not bad[i]]
            self.table.twod = [p for i, p in enumerate(self.table.twod) if not bad[n_mv + i]]
        if not self.table.mv:
            raise RuntimeError("no readable multi-view training image")

    @torch.no_grad()
    def _build_caches(self) -> None:
        t0 = time.perf_counter()
        shared = self.shared if self.shared is not None else {}
        if "table" in shared:
            self.table.mv, self.table.twod = shared["table"]
        else:
            self._drop_unreadable()
            shared["table"] = (self.table.mv, self.table.twod)
        pairs = self.table.pairs
        texts = sorted({p.text for p in pairs})
        self.text_index = {t: i for i, t in enumerate(texts)}
        # the text tower is frozen: each distinct caption is embedded once for the whole run, every variant included
        text_store = shared.setdefault("text_store", {})
        missing = [t for t in texts if t not in text_store]
        for i in range(0, len(missing), 256):
            chunk = missing[i:i + 256]
            text_store.update(zip(chunk, self.model.encode_text(chunk).float().cpu()))
        self.text_emb = torch.stack([text_store[t] for t in texts]).to(self.device)
        self.row_text = torch.tensor([self.text_index[p.text] for p in pairs], dtype=torch.long)
        self.row_obj = torch.tensor([p.obj for p in self.table.mv], dtype=torch.long)
        self.groups = [p.group for p in pairs]
        self.dim = self.text_emb.shape[1]
        self.n_mv, self.n_2d = len(self.table.mv), len(self.table.twod)
        self.rows_of_object = self.table.rows_of_object()
        self.prefix = shared.get("prefix")
        # image key -> activation, shared by every table of the run (the held-out-viewpoint variants train on a
        # subset of the same images, and 2D canonical pairs reuse render images): each image is encoded once.
        store = shared.setdefault("prefix_store", {})
        keys = [p.key for p in pairs]
        if self.cached and self.prefix is None:
            set_mode(self.model, "eval")
            first: dict[str, int] = {}
            for i, k in enumerate(keys):
                first.setdefault(k, i)
            todo = [i for k, i in first.items() if k not in store]  # one row per image not yet encoded
            mine = torch.tensor(todo[self.ctx.rank::self.ctx.world], dtype=torch.long)
            bs = self.cfg.data.encode_batch
            buf = None
            with tqdm(total=len(todo), desc=f"{self.variant}: cache image prefix", unit="img",
                      disable=not (self.cfg.tracking.progress and self.ctx.is_main)) as bar:
                for s in range(0, mine.numel(), bs):
                    rows = mine[s:s + bs]
                    out = self.model.image_prefix(self._images(rows)).float().cpu()
                    if buf is None:
                        buf = torch.zeros((len(todo), *out.shape[1:]))
                    slot = s * self.ctx.world + self.ctx.rank  # position of rows[0] in `todo`
                    buf[slot: slot + rows.numel() * self.ctx.world: self.ctx.world] = out
                    bar.update(rows.numel() * self.ctx.world)
            if todo:
                if buf is None:  # a rank with no rows still needs the shape for the reduction
                    shape = self.model.image_prefix(self._images(torch.tensor([todo[0]]))).shape[1:]
                    buf = torch.zeros((len(todo), *shape))
                buf = all_reduce_sum_(buf, self.ctx)
                store.update({keys[i]: buf[j] for j, i in enumerate(todo)})
            self.prefix = shared["prefix"] = torch.stack([store[k] for k in keys])
        self.timings["cache_s"] = time.perf_counter() - t0

    def _inputs(self, idx: torch.Tensor, epoch: int | None) -> torch.Tensor:
        if self.cached:
            return self.prefix[idx].to(self.device)
        return self._images(idx, augment_epoch=epoch)

    # ------------------------------------------------------------------ data order
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's multi-view rows for `epoch`, in batch order (disjoint across ranks, drop_last)."""
        if not self.cfg.data.object_aware_sampler:
            sampler = DistributedSampler(range(self.n_mv), num_replicas=self.ctx.world, rank=self.ctx.rank,
                                         shuffle=True, seed=self.seed, drop_last=True)
            sampler.set_epoch(epoch)
            return torch.tensor(list(iter(sampler)), dtype=torch.long)
        # object-aware: chunks of `views_per_object` views of one object, chunks shuffled globally, so hard
        # views meet their object's other views in a batch (raises L_VC coverage; not the paper's sampler).
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        chunks = []
        for rows in self.rows_of_object:
            rows = rows[torch.randperm(rows.numel(), generator=g)]
            chunks += list(rows.split(self.cfg.data.views_per_object))
        order = torch.cat([chunks[i] for i in torch.randperm(len(chunks), generator=g).tolist()])
        per_rank = order.numel() // self.ctx.world
        return order[self.ctx.rank * per_rank:(self.ctx.rank + 1) * per_rank]

    def _twod_rows(self, step: int) -> torch.Tensor:
        """2D rows for `step` on this rank: an endless sequence of seeded permutations, indexed by position."""
        b = self.cfg.data.twod_batch
        if b == 0 or self.n_2d == 0:
            return torch.zeros(0, dtype=torch.long)
        start = (step * self.ctx.world + self.ctx.rank) * b
        out = []
        for pos in range(start, start + b):
            cycle, off = divmod(pos, self.n_2d)
            if not out or cycle != getattr(self, "_perm_cycle", None):
                self._perm_cycle = cycle
                self._perm = torch.randperm(self.n_2d, generator=torch.Generator().manual_seed(
                    self.seed * 104_729 + cycle))
            out.append(int(self._perm[off]))
        return torch.tensor(out, dtype=torch.long)

    # ------------------------------------------------------------------ max step
    @torch.no_grad()
    def _embed_rows(self, rows: torch.Tensor) -> torch.Tensor:
        x = self._inputs(rows, None)
        with self._autocast():
            return (self.model.image_tail(x) if self.cached else self.model.encode_image(x)).float()

    def _sync_reuse(self) -> None:
        """Make every rank's reuse buffer the union of all ranks' latest embeddings (row stamps pick the newest)."""
        if not self.ctx.enabled or self.cfg.mining.mode != "reuse":
            return
        stamp = self.reuse_stamp.clone()
        import torch.distributed as dist

        buf = stamp.to(self.device)
        dist.all_reduce(buf, op=dist.ReduceOp.MAX)
        newest = buf.cpu()
        mine = (self.reuse_stamp == newest) & (newest >= 0)
        emb = torch.where(mine[:, None], self.reuse_emb, torch.zeros_like(self.reuse_emb))
        owners = mine.to(torch.float32)
        all_reduce_sum_(emb, self.ctx)
        all_reduce_sum_(owners, self.ctx)
        self.reuse_emb = emb / owners.clamp_min(1)[:, None]
        self.reuse_stamp = newest

    def _mine(self, epoch: int) -> MinedSet:
        t0 = time.perf_counter()
        m = self.cfg.mining
        set_mode(self.model, "eval")  # mining is deterministic: no dropout, whatever the training mode
        objs = range(self.ctx.rank, len(self.rows_of_object), self.ctx.world)
        reuse = m.mode == "reuse" and epoch > 0
        fresh = 0
        if reuse:
            self._sync_reuse()

            def stream():
                nonlocal fresh
                for o in objs:
                    rows = self.rows_of_object[o]
                    z = self.reuse_emb[rows].clone()
                    unseen = self.reuse_stamp[rows] < 0  # dropped by drop_last: embed now
                    if unseen.any():
                        fresh += int(unseen.sum())
                        z[unseen] = self._embed_rows(rows[unseen]).cpu()
                    yield o, rows, z
            it = stream()
        else:
            it = stream_objects(self.rows_of_object, objs, self._embed_rows, m.batch_size)
        mined = mine_from_embeddings(it, len(self.rows_of_object), self.n_mv, self.dim, knn=m.knn,
                                     hard_k=m.hard_k, weight=m.weight, renormalise=m.renormalise_centre)
        for t in (mined.centres, mined.hard, mined.cos_to_centre):
            all_reduce_sum_(t, self.ctx)
        self.reuse_stamp.fill_(-1)
        set_mode(self.model, self.cfg.model_mode)
        dt = time.perf_counter() - t0
        self.timings["mining_s"] += dt
        self.tracker.event({"epoch": epoch, "mining_s": dt, "mode": "reuse" if reuse else "full_pass",
                            "fresh_rows": fresh, **mined.stats()}, self.global_step)
        return mined

    # ------------------------------------------------------------------ min step
    def _autocast(self):
        p = self.cfg.precision
        if self.device.type == "cuda" and p in ("auto", "bf16", "fp16"):
            return torch.autocast("cuda", dtype=torch.float16 if p == "fp16" else torch.bfloat16)
        return contextlib.nullcontext()

    def _train_step(self, rows_mv: torch.Tensor, rows_2d: torch.Tensor, epoch: int) -> dict:
        idx = torch.cat([rows_mv, self.n_mv + rows_2d])
        x = self._inputs(idx, epoch)
        with self._autocast():
            z, logit_scale = self.fwd(x)
        z = F.normalize(z.float(), dim=-1)
        t = self.text_emb[self.row_text[idx]]
        pos = None
        if self.cfg.loss.multi_positive:  # same object, or the very same caption: not a negative
            rows = idx.tolist()
            pos = (positives_matrix([self.groups[i] for i in rows])
                   | positives_matrix([str(int(self.row_text[i])) for i in rows])).to(self.device)
        l_itc = itc_loss(z, t, logit_scale.float(), pos)
        n = rows_mv.numel()
        hard_n = 0
        if self.use_vc:
            hard = self.mined.hard[rows_mv]
            hard_n = int(hard.sum())
            objs = self.row_obj[rows_mv][hard]
            centres = self.mined.centres[objs].to(self.device)
            neg = nearest_other_centre(self.mined.centres, objs).to(self.device) \
                if self.cfg.loss.triplet_negative and hard_n else None
            l_vc = vc_loss(z[:n][hard.to(self.device)], centres, self.cfg.loss.margin, neg)
        else:
            l_vc = torch.zeros((), device=self.device)
        loss = l_itc + self.lam * l_vc
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        lr = self.opt.param_groups[0]["lr"]
        self.sched.step()
        if self.cfg.optim.logit_scale_max is not None:
            with torch.no_grad():
                self.model.logit_scale.clamp_(max=self.cfg.optim.logit_scale_max)
        if self.cfg.mining.mode == "reuse":
            self.reuse_emb[rows_mv] = z[:n].detach().cpu()
            self.reuse_stamp[rows_mv] = self.global_step
        return {"loss": float(loss.detach()), "loss_itc": float(l_itc.detach()), "loss_vc": float(l_vc.detach()), "lr": lr,
                "hard_in_batch": hard_n}

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        self._sync_reuse()
        return {
            "key": self.key, "global_step": self.global_step, "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch, "model": ckpt.trainable_state(self.model),
            "optim": self.opt.state_dict(), "sched": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0),
            "mined": None if self.mined is None else {"centres": self.mined.centres, "hard": self.mined.hard,
                                                      "cos": self.mined.cos_to_centre},
            "reuse_emb": self.reuse_emb, "reuse_stamp": self.reuse_stamp,
            "history": self.tracker.rows, "events": self.tracker.events, "timings": dict(self.timings),
        }

    def _restore(self, s: dict) -> None:
        ckpt.load_trainable_state(self.model, s["model"])
        self.opt.load_state_dict(s["optim"])
        self.sched.load_state_dict(s["sched"])
        if self.scaler is not None and s["scaler"]:
            self.scaler.load_state_dict(s["scaler"])
        self.global_step, self.epoch, self.step_in_epoch = s["global_step"], s["epoch"], s["step_in_epoch"]
        torch.set_rng_state(s["rng"])
        if self.device.type == "cuda" and s["cuda_rng"].numel():
            torch.cuda.set_rng_state(s["cuda_rng"], self.device)
        m = s["mined"]
        self.mined = None if m is None else MinedSet(m["centres"], m["hard"], m["cos"])
        self.reuse_emb, self.reuse_stamp = s["reuse_emb"], s["reuse_stamp"]
        self.tracker.rows, self.tracker.events = list(s["history"]), list(s["events"])
        self.timings.update(s.get("timings", {}))

    # ------------------------------------------------------------------ run
    def prepare(self, resume: bool = True) -> None:
        """Caches, optimiser, scheduler, DDP wrapper and (when resuming) the checkpointed state."""
        cfg = self.cfg
        self._build_caches()
        b = cfg.data.mvcap_batch
        self.steps_per_epoch = self.n_mv // (b * self.ctx.world)
        if self.steps_per_epoch == 0:
            raise ValueError(f"train.data.mvcap_batch={b} × {self.ctx.world} rank(s) exceeds the "
                             f"{self.n_mv} multi-view training pairs: lower the batch")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = build_optimizer(self.model, cfg.optim)
        self.sched = build_scheduler(self.opt, self.total_steps, cfg.optim)
        self.scaler = torch.amp.GradScaler("cuda") if (self.device.type == "cuda" and cfg.precision == "fp16") \
            else None
        fwd = _Forward(self.model, self.cached)
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            fwd = DDP(fwd, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.fwd = fwd
        self.global_step = self.epoch = self.step_in_epoch = 0
        self.mined = None
        # reuse mode keeps the last training-forward embedding of every view on the host (N·D floats)
        n_buf = self.n_mv if cfg.mining.mode == "reuse" else 0
        self.reuse_emb = torch.zeros(n_buf, self.dim)
        self.reuse_stamp = torch.full((n_buf,), -1, dtype=torch.long)
        ckpt_dir = self.work_dir / "checkpoints"
        resumed_from = None
        if resume and (state := ckpt.load_latest(ckpt_dir, self.key)) is not None:
            self._restore(state)
            resumed_from = self.global_step
            log.info("resumed %s at step %d (epoch %d, step %d)", self.variant, self.global_step, self.epoch,
                     self.step_in_epoch)
        self.resumed_from = resumed_from
        set_mode(self.model, cfg.model_mode)

    def fit(self, resume: bool = True) -> dict:
        self.prepare(resume)
        cfg, b = self.cfg, self.cfg.data.mvcap_batch
        resumed_from = self.resumed_from
        ckpt_dir = self.work_dir / "checkpoints"
        n_train = sum(p.numel() for p in self.trainable)
        if self.ctx.is_main:
            log.info("%s: %d trainable parameters, %d multi-view + %d 2D pairs, %d steps/epoch, %d steps",
                     self.variant, n_train, self.n_mv, self.n_2d, self.steps_per_epoch, self.total_steps)
        bar = tqdm(total=self.total_steps, initial=self.global_step, desc=f"train[{self.variant}]",
                   disable=not (cfg.tracking.progress and self.ctx.is_main), dynamic_ncols=True)
        per_step = (b + cfg.data.twod_batch) * self.ctx.world
        while self.global_step < self.total_steps:
            if self.step_in_epoch == 0 and self.use_vc:
                self.mined = self._mine(self.epoch)
            order = self._epoch_order(self.epoch)
            while self.step_in_epoch < self.steps_per_epoch and self.global_step < self.total_steps:
                s = self.step_in_epoch
                t0 = time.perf_counter()
                out = self._train_step(order[s * b:(s + 1) * b], self._twod_rows(self.global_step), self.epoch)
                dt = time.perf_counter() - t0
                self.timings["train_s"] += dt
                self.global_step += 1
                self.step_in_epoch += 1
                row = {"step": self.global_step, "epoch": self.epoch, **out, "samples_per_s": per_step / dt}
                if self.global_step % cfg.tracking.log_every == 0 or self.global_step == self.total_steps:
                    self.tracker.step(row)
                bar.set_postfix(loss=f"{out['loss']:.3f}", vc=f"{out['loss_vc']:.3f}", sps=f"{per_step / dt:.0f}")
                bar.update(1)
                if self.step_in_epoch == self.steps_per_epoch:
                    self.epoch += 1
                    self.step_in_epoch = 0
                if self.global_step % cfg.checkpoint_every == 0 or self.global_step == self.total_steps:
                    state = self._state()
                    if self.ctx.is_main:
                        ckpt.save_checkpoint(ckpt_dir, self.global_step, state, cfg.keep_checkpoints)
                if self.on_step is not None:
                    self.on_step(self.global_step)
                if self.step_in_epoch == 0:
                    break
        bar.close()
        last = self.tracker.rows[-1] if self.tracker.rows else {}
        return {
            "variant": self.variant, "steps": self.global_step, "epochs_run": self.epoch,
            "steps_per_epoch": self.steps_per_epoch, "trainable_params": n_train,
            "mv_pairs": self.n_mv, "twod_pairs": self.n_2d, "objects": len(self.rows_of_object),
            "resumed_from": resumed_from, "final_loss": last.get("loss"), "final_loss_itc": last.get("loss_itc"),
            "final_loss_vc": last.get("loss_vc"), **{k: round(v, 3) for k, v in self.timings.items()},
            "samples_per_s": round(per_step * self.global_step / self.timings["train_s"], 2)
            if self.timings["train_s"] else None,
        }

"""The minimax training loop of one variant: max step (mining) once per epoch, min step every batch.

The parts, one job each: data order (`sampler`), what the tail sees (`inputs`: prefix activations from the feature
store, or images), the max step (`mining.Miner`), the min step (`step.train_step`), the resumable state
(`checkpoint.capture/restore`) and step metrics (`tracking`). This module only wires them into epochs and steps.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from ovt.io import append_jsonl
from ovt.train import checkpoint as ckpt
from ovt.train.captions import TEXT_CACHE, CaptionSource, TextTable
from ovt.train.config import TrainParams
from ovt.train.data import TrainTable
from ovt.train.distributed import DistContext
from ovt.train.inputs import TrainInputs
from ovt.train.losses import positives_matrix
from ovt.train.mining import MinedSet, Miner
from ovt.train.optim import build_optimizer, build_scheduler
from ovt.train.sampler import CyclingSampler, epoch_order, object_aware_order
from ovt.train.step import Forward, autocast, resolve_precision, train_step
from ovt.train.tracking import Tracker

if TYPE_CHECKING:  # the model package is heavy; training only needs its interface for type checking
    from ovt.model.ovt_model import OVTModel

log = logging.getLogger(__name__)


def set_mode(model: nn.Module, mode: str) -> None:
    """eval (official) or train; batch-norm of the frozen tower stays in eval either way (its statistics are
    part of the frozen base, and updating them would change the model outside the adapters)."""
    model.train(mode == "train")
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


@contextlib.contextmanager
def inference_pass(model: OVTModel) -> Iterator[None]:
    """What the max step's no-grad forwards run under (the same embeddings up to float rounding, at about the
    base tower's inference cost): LoRA folded into the base weights (`OVTModel.folded_adapters`), and, under
    `train.deterministic`, without torch's NaN fill of every new tensor (`fill_uninitialized_memory`: a guard
    against reading uninitialised memory, which every op of the pass overwrites; deterministic kernels stay on)."""
    det: Any = torch.utils.deterministic  # a module whose attribute setter is torch's global flag
    fill = det.fill_uninitialized_memory
    det.fill_uninitialized_memory = False
    try:
        with model.folded_adapters():
            yield
    finally:
        det.fill_uninitialized_memory = fill


class Trainer:
    mined: MinedSet | None  # set by prepare() (and restore())
    # the max step's fast path (`inference_pass`, `Miner(fast=True)`); False: the previous one, kept as the
    # reference for the equivalence tests and benchmarks/bench_mining.py
    fast_mining: bool = True

    def __init__(
        self,
        model: OVTModel,
        table: TrainTable,
        cfg: TrainParams,
        *,
        variant: str,
        seed: int,
        work_dir: Path,
        ctx: DistContext,
        key: str,
        failures: Path | None = None,
        on_step: Callable[[int], None] | None = None,
        run_name: str | None = None,
        shared_cache: dict | None = None,
        store: Any = None,
    ):
        self.model, self.table, self.cfg, self.variant = model, table, cfg, variant
        self.seed, self.ctx, self.key, self.on_step = seed, ctx, key, on_step
        self.work_dir = Path(work_dir)
        self.failures = failures
        # frozen-tower outputs are the same for every variant: the stage passes one dict to all of them
        self.shared = shared_cache if shared_cache is not None else {}
        self.lam = cfg.loss.lam if variant == "ovt" else 0.0
        self.use_vc = variant == "ovt" and self.lam > 0
        self.device = ctx.device
        self.precision = resolve_precision(cfg.precision, self.device)
        torch.manual_seed(seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        model.to(self.device)
        self.inputs = TrainInputs(
            model,
            table,
            cfg.data,
            store=store,
            ctx=ctx,
            seed=seed,
            shared=self.shared,
            on_failure=self._log_failure,
            progress=cfg.tracking.progress,
        )
        self.tracker = Tracker(
            ctx.is_main,
            cfg.tracking.mlflow,
            cfg.tracking.experiment,
            run_name or f"{variant}-seed{seed}",
            {"variant": variant, "seed": seed, **cfg.model_dump(mode="json")},
        )
        self.timings: dict[str, float] = {"mining_s": 0.0, "train_s": 0.0, "cache_s": 0.0}

    @property
    def cached(self) -> bool:
        """Whether steps read the cached prefix (final once `prepare()` has run: it may refuse the cache)."""
        return self.inputs.cached

    def _log_failure(self, item: str, err: Exception) -> None:
        log.warning("skipping %s: %s", item, err)
        if self.failures is not None and self.ctx.is_main:
            append_jsonl(
                self.failures, {"stage": "train", "item": item, "error": type(err).__name__, "detail": str(err)[:500]}
            )

    # ------------------------------------------------------------------ data order
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's multi-view rows for `epoch`, in batch order (disjoint across ranks, drop_last)."""
        if self.cfg.data.object_aware_sampler:
            return object_aware_order(
                self.rows_of_object,
                epoch,
                seed=self.seed,
                rank=self.ctx.rank,
                world=self.ctx.world,
                views_per_object=self.cfg.data.views_per_object,
            )
        return epoch_order(self.n_mv, epoch, seed=self.seed, rank=self.ctx.rank, world=self.ctx.world)

    # ------------------------------------------------------------------ max step
    @torch.no_grad()
    def embed_rows(self, rows: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.inputs.embed(self.inputs(rows)).float()

    def mine(self, epoch: int) -> MinedSet:
        t0 = time.perf_counter()
        set_mode(self.model, "eval")  # mining is deterministic: no dropout, whatever the training mode
        if self.inputs.streaming and not (self.cfg.mining.mode == "reuse" and epoch > 0):
            # the full pass embeds this rank's objects' views in object order, in runs of at most
            # mining.batch_size (the reuse mode embeds only a few unseen rows: those decode in process)
            objs = range(self.ctx.rank, len(self.rows_of_object), self.ctx.world)
            rows = torch.cat([self.rows_of_object[o] for o in objs] or [torch.zeros(0, dtype=torch.long)])
            self.inputs.plan(list(rows.split(self.cfg.mining.batch_size)))
        with inference_pass(self.model) if self.miner.fast else contextlib.nullcontext():
            mined, event = self.miner.mine(epoch, self.embed_rows)
        set_mode(self.model, self.cfg.model_mode)
        dt = time.perf_counter() - t0
        self.timings["mining_s"] += dt
        self.tracker.event({**event, "mining_s": dt}, self.global_step)
        return mined

    # ------------------------------------------------------------------ min step
    def step_rows(self, order: torch.Tensor, step_in_epoch: int, global_step: int) -> torch.Tensor:
        """Table rows of one step: its slice of the epoch order, then its 2D mixing rows."""
        b = self.cfg.data.mvcap_batch
        rows_mv = order[step_in_epoch * b : (step_in_epoch + 1) * b]
        return torch.cat([rows_mv, self.n_mv + self.twod.rows(global_step)])

    def train_step(self, rows_mv: torch.Tensor, rows_2d: torch.Tensor, epoch: int) -> dict:
        idx = torch.cat([rows_mv, self.n_mv + rows_2d])
        positives = None
        if self.cfg.loss.multi_positive:  # same object, or the very same caption: not a negative
            rows = idx.tolist()
            positives = (
                positives_matrix([int(self.groups[i]) for i in rows])
                | positives_matrix([str(int(self.text.row_caption[i])) for i in rows])
            ).to(self.device)
        mined = self.mined if self.use_vc else None  # L_VC: the ovt variant, once an epoch has been mined
        out, z_mv = train_step(
            self.fwd,
            self.inputs(idx, epoch),
            self.text[idx],
            n_mv=rows_mv.numel(),
            opt=self.opt,
            sched=self.sched,
            scaler=self.scaler,
            trainable=self.trainable,
            cfg=self.cfg,
            precision=self.precision,
            device=self.device,
            lam=self.lam if mined is not None else 0.0,
            mined=mined,
            obj=self.row_obj[rows_mv],
            hard=mined.hard[rows_mv] if mined is not None else None,
            positives=positives,
            model=self.model,
        )
        self.miner.record(rows_mv, z_mv, self.global_step)
        return out

    # ------------------------------------------------------------------ checkpoints
    def _position(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    def state(self) -> dict:
        return ckpt.capture(
            key=self.key,
            position=self._position(),
            model=self.model,
            opt=self.opt,
            sched=self.sched,
            scaler=self.scaler,
            device=self.device,
            mined=self.mined,
            miner_state=self.miner.state(),
            history=self.tracker.history(),
            timings=self.timings,
        )

    def restore(self, s: dict) -> None:
        pos, self.mined, miner, history, timings = ckpt.restore(
            s, model=self.model, opt=self.opt, sched=self.sched, scaler=self.scaler, device=self.device
        )
        self.global_step, self.epoch, self.step_in_epoch = pos["global_step"], pos["epoch"], pos["step_in_epoch"]
        self.miner.load(miner)
        self.tracker.rows, self.tracker.events = history["steps"], history["events"]
        self.timings.update(timings)

    # ------------------------------------------------------------------ run
    def _caption_source(self) -> CaptionSource:
        """The run's caption bank (the stage shares one across its variants); a Trainer used on its own keeps one
        for its table in its work folder, keyed by its content key."""
        if "captions" not in self.shared:
            rows = self.table.rows
            self.shared["captions"] = CaptionSource(self.work_dir / TEXT_CACHE, self.key, rows.sorted_texts)
        return self.shared["captions"]

    def prepare(self, resume: bool = True) -> None:
        """Inputs, optimiser, scheduler, DDP wrapper and (when resuming) the checkpointed state."""
        cfg = self.cfg
        self.inputs.prepare()
        self.timings["cache_s"] = self.inputs.seconds
        self.text = TextTable(self.model, self.table, self._caption_source(), self.ctx)
        self.n_mv, self.n_2d = len(self.table.mv), len(self.table.twod)
        self.row_obj = torch.from_numpy(np.asarray(self.table.mv.obj, dtype=np.int64))
        self.groups = self.table.rows.group_code  # equal codes: the same group (object or 2D caption)
        self.rows_of_object = self.table.rows_of_object()
        self.dim = self.text.dim
        b = cfg.data.mvcap_batch
        self.steps_per_epoch = self.n_mv // (b * self.ctx.world)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train.data.mvcap_batch={b} × {self.ctx.world} rank(s) exceeds the "
                f"{self.n_mv} multi-view training pairs: lower the batch"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.twod = CyclingSampler(
            self.n_2d, cfg.data.twod_batch, seed=self.seed, rank=self.ctx.rank, world=self.ctx.world
        )
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = build_optimizer(self.model, cfg.optim)
        self.sched = build_scheduler(self.opt, self.total_steps, cfg.optim, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        fwd: nn.Module = Forward(self.model, self.cached)
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            fwd = DDP(fwd, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.fwd = fwd
        self.miner = Miner(cfg.mining, self.ctx, self.rows_of_object, self.n_mv, self.dim, fast=self.fast_mining)
        self.global_step = self.epoch = self.step_in_epoch = 0
        self.mined = None
        self.resumed_from = None
        if resume and (state := ckpt.load_latest(self.work_dir / "checkpoints", self.key)) is not None:
            self.restore(state)
            self.resumed_from = self.global_step
            log.info(
                "resumed %s at step %d (epoch %d, step %d)",
                self.variant,
                self.global_step,
                self.epoch,
                self.step_in_epoch,
            )
        set_mode(self.model, cfg.model_mode)

    def fit(self, resume: bool = True) -> dict:
        self.prepare(resume)
        cfg, b = self.cfg, self.cfg.data.mvcap_batch
        n_train = sum(p.numel() for p in self.trainable)
        if self.ctx.is_main:
            log.info(
                "%s: %d trainable parameters, %d multi-view + %d 2D pairs, %d steps/epoch, %d steps (%s)",
                self.variant,
                n_train,
                self.n_mv,
                self.n_2d,
                self.steps_per_epoch,
                self.total_steps,
                "cached prefix" if self.cached else "full forward",
            )
        bar = tqdm(
            total=self.total_steps,
            initial=self.global_step,
            desc=f"train[{self.variant}]",
            disable=not (cfg.tracking.progress and self.ctx.is_main),
            dynamic_ncols=True,
        )
        per_step = (b + cfg.data.twod_batch) * self.ctx.world
        while self.global_step < self.total_steps:
            if self.step_in_epoch == 0 and self.use_vc:
                self.mined = self.mine(self.epoch)
            order = self.epoch_order(self.epoch)
            if self.inputs.streaming:  # this epoch's remaining steps, so the workers decode ahead of them
                n = min(self.steps_per_epoch - self.step_in_epoch, self.total_steps - self.global_step)
                self.inputs.plan(
                    [self.step_rows(order, self.step_in_epoch + k, self.global_step + k) for k in range(n)],
                    self.epoch,
                )
            while self.step_in_epoch < self.steps_per_epoch and self.global_step < self.total_steps:
                s = self.step_in_epoch
                t0 = time.perf_counter()
                out = self.train_step(order[s * b : (s + 1) * b], self.twod.rows(self.global_step), self.epoch)
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
                    state = self.state()
                    if self.ctx.is_main:
                        ckpt.save_checkpoint(
                            self.work_dir / "checkpoints", self.global_step, state, cfg.keep_checkpoints
                        )
                if self.on_step is not None:
                    self.on_step(self.global_step)
                if self.step_in_epoch == 0:
                    break
        bar.close()
        self.inputs.close()
        last = self.tracker.rows[-1] if self.tracker.rows else {}
        epochs_run = self.global_step / self.steps_per_epoch
        return {
            "variant": self.variant,
            "steps": self.global_step,
            "epochs_run": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "trainable_params": n_train,
            "precision": self.precision,
            "input": "cached prefix" if self.cached else "full forward",
            "mv_pairs": self.n_mv,
            "twod_pairs": self.n_2d,
            "objects": len(self.rows_of_object),
            "resumed_from": self.resumed_from,
            "final_loss": last.get("loss"),
            "final_loss_itc": last.get("loss_itc"),
            "final_loss_vc": last.get("loss_vc"),
            **{k: round(v, 3) for k, v in self.timings.items()},
            # mining time per epoch over training time per epoch (the max step's share of the compute)
            "mining_share": round(
                self.timings["mining_s"]
                / max(1, self.epoch + (self.step_in_epoch > 0))
                / (self.timings["train_s"] / epochs_run),
                4,
            )
            if self.use_vc and self.timings["train_s"] and epochs_run
            else None,
            "samples_per_s": round(per_step * self.global_step / self.timings["train_s"], 2)
            if self.timings["train_s"]
            else None,
        }

"""The min step: one optimiser step of L_ITC + λ·L_VC on a batch of multi-view (and 2D) rows."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ovt.train.losses import itc_loss, vc_loss
from ovt.train.mining import MinedSet, nearest_other_centre

if TYPE_CHECKING:  # the model package is heavy; training only needs its interface for type checking
    from ovt.model.ovt_model import OVTModel

log = logging.getLogger(__name__)


class Forward(nn.Module):
    """What DDP wraps: the trainable image path plus the logit scale, so every trainable tensor is used."""

    def __init__(self, model: OVTModel, cached: bool):
        super().__init__()
        self.model = model
        self.cached = cached

    def forward(self, x: torch.Tensor):
        z = self.model.image_tail(x) if self.cached else self.model.encode_image(x)
        return z, self.model.logit_scale


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run really uses: mixed precision needs CUDA; elsewhere fp32, with a warning when asked
    for explicitly (auto means "bf16 where it helps" and falls back silently)."""
    if device.type == "cuda":
        return "bf16" if precision == "auto" else precision
    if precision in ("bf16", "fp16"):
        msg = f"train.precision={precision} needs a CUDA device; this run has {device.type}: falling back to fp32"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
    return "fp32"


def autocast(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    fwd: nn.Module,
    x: torch.Tensor,
    text: torch.Tensor,
    *,
    n_mv: int,
    opt,
    sched,
    scaler,
    trainable: Sequence[torch.Tensor],
    cfg,
    precision: str,
    device: torch.device,
    lam: float,
    mined: MinedSet | None,
    obj: torch.Tensor | None,
    hard: torch.Tensor | None,
    positives: torch.Tensor | None,
    model: OVTModel,
) -> tuple[dict, torch.Tensor]:
    """One step; returns (metrics, the batch's normalised multi-view embeddings, detached)."""
    with autocast(device, precision):
        z, logit_scale = fwd(x)
    z = F.normalize(z.float(), dim=-1)
    l_itc = itc_loss(z, text, logit_scale.float(), positives)
    hard_n = 0
    if mined is not None and lam > 0:
        if hard is None or obj is None:
            raise ValueError("train_step: L_VC (mined set, lam > 0) needs the batch's obj and hard rows")
        hard_n = int(hard.sum())
        objs = obj[hard]
        centres = mined.centres[objs].to(device)
        neg = nearest_other_centre(mined.centres, objs).to(device) if cfg.loss.triplet_negative and hard_n else None
        l_vc = vc_loss(z[:n_mv][hard.to(device)], centres, cfg.loss.margin, neg)
    else:
        l_vc = torch.zeros((), device=device)
    loss = l_itc + lam * l_vc
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    if cfg.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    lr = opt.param_groups[0]["lr"]
    sched.step()
    if cfg.optim.logit_scale_max is not None:
        with torch.no_grad():
            model.logit_scale.clamp_(max=cfg.optim.logit_scale_max)
    out = {
        "loss": float(loss.detach()),
        "loss_itc": float(l_itc.detach()),
        "loss_vc": float(l_vc.detach()),
        "lr": lr,
        "hard_in_batch": hard_n,
    }
    return out, z[:n_mv].detach()

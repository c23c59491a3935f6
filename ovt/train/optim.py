"""AdamW with decoupled weight-decay groups and the LR schedule (linear warm-up, then cosine per step or per epoch)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ovt.train.config import OptimParams


def _no_decay(name: str, p: torch.Tensor) -> bool:
    # gains (norm weights), biases, the logit scale and other 0/1-d tensors: decaying them only shrinks the
    # model toward a degenerate point (open_clip's trainer excludes them the same way).
    return p.ndim < 2 or "logit_scale" in name or name.endswith(".bias") or "norm" in name.lower()


def param_groups(model: nn.Module, cfg: OptimParams) -> list[dict]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if (not cfg.wd_on_all and _no_decay(name, p)) else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimParams) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimiser step `step` (0-based): linear warm-up to 1, then cosine down to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_cosine(step: int, steps_per_epoch: int, t_max: int, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """LR multiplier of torch's CosineAnnealingLR(T_max=t_max) stepped once per epoch (closed form, so periodic
    past t_max like torch's), after an optional linear warm-up over the first `warmup` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    epoch = step // max(1, steps_per_epoch)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * epoch / t_max))


def lr_multiplier(cfg: OptimParams, total_steps: int, steps_per_epoch: int):
    """step -> LR multiplier for the configured schedule."""
    if cfg.schedule == "epoch_cosine":
        return lambda s: epoch_cosine(s, steps_per_epoch, cfg.t_max_epochs, cfg.warmup_steps, cfg.min_lr_ratio)
    return lambda s: cosine_with_warmup(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)


def build_scheduler(opt: torch.optim.Optimizer, total_steps: int, cfg: OptimParams, steps_per_epoch: int = 1):
    # LambdaLR's state is just the step counter, so a resumed run lands on exactly the same LR.
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(cfg, total_steps, steps_per_epoch))

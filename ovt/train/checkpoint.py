"""Training checkpoints: atomic (tmp + fsync + rename), loadable with weights_only=True, pruned to the last N.

A checkpoint holds everything that determines the rest of the run, so `--resume` continues bit-for-bit: the
trainable tensors, optimiser and scheduler states, the position in the data order (epoch, step in epoch), the
torch RNG state, the current mined set (it was computed from weights that no longer exist) and the reuse buffer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ovt.io import atomic_writer

_NAME = re.compile(r"^step-(\d{8})\.pt$")


def save_checkpoint(ckpt_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / f"step-{step:08d}.pt"
    with atomic_writer(path, "wb") as fh:
        torch.save(state, fh)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files of an interrupted write never match the pattern)."""
    if not Path(ckpt_dir).is_dir():
        return []
    return sorted(p for p in Path(ckpt_dir).iterdir() if _NAME.match(p.name))


def load_latest(ckpt_dir: Path, key: str) -> dict[str, Any] | None:
    """The newest checkpoint written under the same content key, or None (a changed config never resumes)."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            return state
    return None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unknown {unknown[:5]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)

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


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0),
    }


def restore_rng(s: dict, device: torch.device) -> None:
    torch.set_rng_state(s["rng"])
    if device.type == "cuda" and s["cuda_rng"].numel():
        torch.cuda.set_rng_state(s["cuda_rng"], device)


def capture(
    *,
    key: str,
    position: dict,
    model: torch.nn.Module,
    opt,
    sched,
    scaler,
    device: torch.device,
    mined,
    miner_state: dict,
    history: dict,
    timings: dict,
) -> dict[str, Any]:
    """Everything that determines the rest of the run, as one weights_only-loadable dict."""
    return {
        "key": key,
        **position,
        "model": trainable_state(model),
        "optim": opt.state_dict(),
        "sched": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        **rng_state(device),
        "mined": None if mined is None else {"centres": mined.centres, "hard": mined.hard, "cos": mined.cos_to_centre},
        **miner_state,
        "history": history["steps"],
        "events": history["events"],
        "timings": dict(timings),
    }


def restore(s: dict, *, model: torch.nn.Module, opt, sched, scaler, device: torch.device):
    """Load the model/optimiser/scheduler/RNG parts in place; return (position, mined, miner state, history,
    timings) for the owners of the rest."""
    from ovt.train.mining import MinedSet

    load_trainable_state(model, s["model"])
    opt.load_state_dict(s["optim"])
    sched.load_state_dict(s["sched"])
    if scaler is not None and s["scaler"]:
        scaler.load_state_dict(s["scaler"])
    restore_rng(s, device)
    m = s["mined"]
    mined = None if m is None else MinedSet(m["centres"], m["hard"], m["cos"])
    position = {k: s[k] for k in ("global_step", "epoch", "step_in_epoch")}
    miner = {"reuse_emb": s["reuse_emb"], "reuse_stamp": s["reuse_stamp"]}
    return position, mined, miner, {"steps": list(s["history"]), "events": list(s["events"])}, s.get("timings", {})

"""torchrun / DDP plumbing: process group from the environment, rank-sharded work and its reduction."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env() -> DistContext:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); a plain process is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistContext(rank, world, local, device)


def all_reduce_sum_(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """In-place SUM over ranks (moved through the backend's device: gloo is CPU, nccl is CUDA)."""
    if not ctx.enabled:
        return t
    if t.dtype == torch.bool:
        buf = t.to(ctx.device, torch.int32)
        dist.all_reduce(buf)
        t.copy_(buf.cpu() > 0)
        return t
    buf = t.to(ctx.device)
    dist.all_reduce(buf)
    t.copy_(buf.to(t.device))
    return t


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def destroy(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()

"""Data order: which rows a step trains on, as a pure function of (seed, epoch, step, rank).

Never hidden iterator state, so a resumed run replays exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler


def epoch_order(n: int, epoch: int, *, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's rows of `range(n)` for `epoch`, shuffled, disjoint across ranks (drop_last), as torch's
    DistributedSampler draws them (the same order a DataLoader over the same sampler would see)."""
    # torch annotates the dataset as Dataset, but the sampler only takes its len(): a range is enough
    sampler: DistributedSampler[int] = DistributedSampler(
        range(n),  # type: ignore[arg-type]
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(iter(sampler)), dtype=torch.long)


def object_aware_order(
    rows_of_object: list[torch.Tensor], epoch: int, *, seed: int, views_per_object: int, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """Chunks of `views_per_object` views of one object, chunks shuffled globally, so hard views meet their
    object's other views in a batch (raises L_VC coverage; not the paper's sampler)."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    chunks = []
    for rows in rows_of_object:
        rows = rows[torch.randperm(rows.numel(), generator=g)]
        chunks += list(rows.split(views_per_object))
    order = torch.cat([chunks[i] for i in torch.randperm(len(chunks), generator=g).tolist()])
    per_rank = order.numel() // world
    return order[rank * per_rank : (rank + 1) * per_rank]


class EpochSampler:
    """Batches of `batch` rows over `range(n)`: epoch e is one seeded permutation, step s its s-th slice."""

    def __init__(self, n: int, batch: int, *, seed: int):
        if not 0 < batch <= n:
            raise ValueError(f"batch {batch} must be in 1..{n} (the number of rows)")
        self.n, self.b, self.seed = n, batch, seed
        self.steps_per_epoch = n // batch
        self._cache: tuple[int, torch.Tensor] | None = None

    def batch(self, step: int) -> torch.Tensor:
        epoch, s = divmod(step, self.steps_per_epoch)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, epoch_order(self.n, epoch, seed=self.seed))
        return self._cache[1][s * self.b : (s + 1) * self.b]


class CyclingSampler:
    """The 2D mixing rows: an endless sequence of seeded permutations of `range(n)`, indexed by position, so step
    t on rank r always gets the same rows."""

    def __init__(self, n: int, batch: int, *, seed: int, rank: int = 0, world: int = 1):
        self.n, self.b, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self._cycle: tuple[int, torch.Tensor] | None = None

    def rows(self, step: int) -> torch.Tensor:
        if self.b == 0 or self.n == 0:
            return torch.zeros(0, dtype=torch.long)
        start = (step * self.world + self.rank) * self.b
        out = []
        for pos in range(start, start + self.b):
            cycle, off = divmod(pos, self.n)
            if self._cycle is None or self._cycle[0] != cycle:
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 104_729 + cycle))
                self._cycle = (cycle, perm)
            out.append(int(self._cycle[1][off]))
        return torch.tensor(out, dtype=torch.long)

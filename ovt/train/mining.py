"""The max step: per-object kNN-weighted viewpoint centres and the K views farthest from them.

Memory contract (so mining scales to paper-size datasets): the accelerator holds O(objects·D) (the centres) plus
one batch. Views are embedded and reduced object by object; per-view embeddings, when kept (for the `reuse` mode or
statistics), live in host memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Weight = Literal["inv_cos", "inv_dist"]


def knn_weighted_centre(
    z: torch.Tensor, k: int = 5, weight: Weight = "inv_cos", renormalise: bool = False
) -> torch.Tensor:
    """Centre of one object's L2-normalised view embeddings `z` [n,D].

    inv_cos (official): s_j = mean cosine to the k nearest *other* views, w_j = 1/s_j (0 where s_j == 0), so views
    whose neighbours are dissimilar (outliers) weigh more. inv_dist (older official code): w_j = 1/Σ of the kNN
    Euclidean distances, favouring dense views. Weights are normalised to sum to 1. Objects with ≤ k views use
    all their other views (k_eff = n−1); a single view is its own centre. If the weights cannot be normalised
    (sum ≤ 0, e.g. mean cosines around zero), the plain mean is used instead of dividing by ~0.
    """
    if z.dim() != 2 or z.shape[0] == 0:
        raise ValueError(f"knn_weighted_centre: need [n>0, D] embeddings, got {tuple(z.shape)}")
    n = z.shape[0]
    z = z.float()
    k_eff = min(k, n - 1)
    if k_eff == 0:
        c = z[0].clone()
    else:
        sim = z @ z.t()
        # mask self explicitly instead of dropping "the first of top-(k+1)": duplicate views tie with self.
        sim.fill_diagonal_(float("-inf"))
        nn_sim = sim.topk(k_eff, dim=1).values  # [n, k_eff]
        if weight == "inv_cos":
            s = nn_sim.mean(1)
            w = torch.where(s != 0, 1.0 / (s + 1e-8), torch.zeros_like(s))
        else:
            # unit vectors: ||a−b|| = sqrt(2 − 2cos)
            dist = (2.0 - 2.0 * nn_sim).clamp_min(0).sqrt().sum(1)
            w = 1.0 / (dist + 1e-8)
        total = w.sum()
        w = w / total if total > 1e-12 else torch.full_like(w, 1.0 / n)
        c = (w[:, None] * z).sum(0)
    return F.normalize(c, dim=0) if renormalise else c


def hard_views(z: torch.Tensor, centre: torch.Tensor, k: int) -> torch.Tensor:
    """Local indices of the k views with the lowest cosine to `centre` (ties broken by lower index)."""
    cos = F.cosine_similarity(z.float(), centre.float()[None], dim=-1)
    order = torch.sort(cos, stable=True).indices
    return order[: min(k, z.shape[0])]


@dataclass
class MinedSet:
    """Result of one max step over the training views (rows index the multi-view training table)."""

    centres: torch.Tensor  # [n_objects, D] float32
    hard: torch.Tensor  # [n_rows] bool
    cos_to_centre: torch.Tensor  # [n_rows] float32 (all views, for statistics)

    def stats(self) -> dict[str, float]:
        c = self.cos_to_centre
        h = c[self.hard]
        return {
            "mined/hard_views": int(self.hard.sum()),
            "mined/cos_all_mean": float(c.mean()) if c.numel() else 0.0,
            "mined/cos_hard_mean": float(h.mean()) if h.numel() else 0.0,
            "mined/cos_hard_min": float(h.min()) if h.numel() else 0.0,
        }


def mine_from_embeddings(
    emb_of_object: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
    n_objects: int,
    n_rows: int,
    dim: int,
    *,
    knn: int,
    hard_k: int,
    weight: Weight,
    renormalise: bool,
) -> MinedSet:
    """Reduce a stream of (object index, global row indices [n], embeddings [n,D]) into centres and hard sets.

    Objects not in the stream (another rank's shard) keep zero centres and no hard views, so shards can be
    combined by summation (`ovt.train.distributed.all_reduce_mined`).
    """
    centres = torch.zeros(n_objects, dim)
    hard = torch.zeros(n_rows, dtype=torch.bool)
    cos = torch.zeros(n_rows)
    for obj, rows, z in emb_of_object:
        z = F.normalize(z.float().cpu(), dim=-1)
        c = knn_weighted_centre(z, knn, weight, renormalise)
        centres[obj] = c
        cos[rows] = F.cosine_similarity(z, c[None], dim=-1)
        hard[rows[hard_views(z, c, hard_k)]] = True
    return MinedSet(centres, hard, cos)


def stream_objects(
    rows_of_object: list[torch.Tensor],
    objects: Iterable[int],
    embed: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
):
    """Embed each object's views in batches of at most `batch_size` and yield (obj, rows, embeddings on host).

    `embed(rows) -> [len(rows), D]` runs the model (no grad) on the given table rows; only one batch is on the
    accelerator at a time, and only one object's embeddings are alive on the host.
    """
    for obj in objects:
        rows = rows_of_object[obj]
        if rows.numel() == 0:
            continue
        parts = [embed(rows[i : i + batch_size]).detach().float().cpu() for i in range(0, rows.numel(), batch_size)]
        yield obj, rows, torch.cat(parts)


def nearest_other_centre(centres: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """For each object index in `obj`, the centre (of another object) most similar to its own: the triplet negative."""
    c = F.normalize(centres.float(), dim=-1)
    sim = c[obj] @ c.t()
    sim[torch.arange(obj.numel()), obj] = float("-inf")
    empty = centres.abs().sum(1) == 0  # objects with no views in this run
    sim[:, empty] = float("-inf")
    return centres[sim.argmax(1)]


class Miner:
    """The max step of one variant: a full pass (official) or the training forward's latest embeddings (`reuse`).

    In `full_pass` mode every view is re-embedded through the trainable tail in large inference batches
    (`mining.batch_size`), from the same cached prefix the steps read, so the pass costs one tail forward per view
    without autograd bookkeeping. `reuse` keeps each view's last training embedding on the host (N·D floats).
    """

    def __init__(self, cfg, ctx, rows_of_object: list[torch.Tensor], n_rows: int, dim: int):
        self.cfg, self.ctx, self.rows_of_object, self.n_rows, self.dim = cfg, ctx, rows_of_object, n_rows, dim
        n_buf = n_rows if cfg.mode == "reuse" else 0
        self.reuse_emb = torch.zeros(n_buf, dim)
        self.reuse_stamp = torch.full((n_buf,), -1, dtype=torch.long)

    def record(self, rows: torch.Tensor, z: torch.Tensor, step: int) -> None:
        """Keep the training forward's embeddings of `rows` (reuse mode only)."""
        if self.cfg.mode == "reuse":
            self.reuse_emb[rows] = z.detach().float().cpu()
            self.reuse_stamp[rows] = step

    def sync(self) -> None:
        """Make every rank's reuse buffer the union of all ranks' latest embeddings (row stamps pick the newest)."""
        if not self.ctx.enabled or self.cfg.mode != "reuse":
            return
        import torch.distributed as dist

        from ovt.train.distributed import all_reduce_sum_

        buf = self.reuse_stamp.clone().to(self.ctx.device)
        dist.all_reduce(buf, op=dist.ReduceOp.MAX)
        newest = buf.cpu()
        mine = (self.reuse_stamp == newest) & (newest >= 0)
        emb = torch.where(mine[:, None], self.reuse_emb, torch.zeros_like(self.reuse_emb))
        owners = mine.to(torch.float32)
        all_reduce_sum_(emb, self.ctx)
        all_reduce_sum_(owners, self.ctx)
        self.reuse_emb = emb / owners.clamp_min(1)[:, None]
        self.reuse_stamp = newest

    def mine(self, epoch: int, embed_rows: Callable[[torch.Tensor], torch.Tensor]) -> tuple[MinedSet, dict]:
        """(mined set, event record) for `epoch`; `embed_rows(rows)` embeds table rows with the current model."""
        from ovt.train.distributed import all_reduce_sum_

        m = self.cfg
        objs = range(self.ctx.rank, len(self.rows_of_object), self.ctx.world)
        reuse = m.mode == "reuse" and epoch > 0
        fresh = 0
        if reuse:
            self.sync()

            def stream():
                nonlocal fresh
                for o in objs:
                    rows = self.rows_of_object[o]
                    z = self.reuse_emb[rows].clone()
                    unseen = self.reuse_stamp[rows] < 0  # dropped by drop_last: embed now
                    if unseen.any():
                        fresh += int(unseen.sum())
                        z[unseen] = embed_rows(rows[unseen]).float().cpu()
                    yield o, rows, z

            it = stream()
        else:
            it = stream_batched(self.rows_of_object, objs, embed_rows, m.batch_size)
        mined = mine_from_embeddings(
            it,
            len(self.rows_of_object),
            self.n_rows,
            self.dim,
            knn=m.knn,
            hard_k=m.hard_k,
            weight=m.weight,
            renormalise=m.renormalise_centre,
        )
        for t in (mined.centres, mined.hard, mined.cos_to_centre):
            all_reduce_sum_(t, self.ctx)
        self.reuse_stamp.fill_(-1)
        return mined, {"epoch": epoch, "mode": "reuse" if reuse else "full_pass", "fresh_rows": fresh, **mined.stats()}

    def state(self) -> dict:
        self.sync()
        return {"reuse_emb": self.reuse_emb, "reuse_stamp": self.reuse_stamp}

    def load(self, s: dict) -> None:
        self.reuse_emb, self.reuse_stamp = s["reuse_emb"], s["reuse_stamp"]


def stream_batched(
    rows_of_object: list[torch.Tensor],
    objects: Iterable[int],
    embed: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
):
    """Like `stream_objects`, but a forward spans objects: full `batch_size` batches however few views each object
    has (~26 here, so per-object forwards would run small, slow batches). Host memory holds at most one group of
    objects whose views fill a batch, never the whole pass."""
    group: list[int] = []
    n = 0

    def flush():
        rows = torch.cat([rows_of_object[o] for o in group])
        z = torch.cat(
            [embed(rows[i : i + batch_size]).detach().float().cpu() for i in range(0, rows.numel(), batch_size)]
        )
        start = 0
        for o in group:
            k = rows_of_object[o].numel()
            yield o, rows_of_object[o], z[start : start + k]
            start += k

    for o in objects:
        if rows_of_object[o].numel() == 0:
            continue
        group.append(o)
        n += rows_of_object[o].numel()
        if n >= batch_size:
            yield from flush()
            group, n = [], 0
    if group:
        yield from flush()

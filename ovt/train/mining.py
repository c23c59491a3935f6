"""The max step: per-object kNN-weighted viewpoint centres and the K views farthest from them.

Memory contract (so mining scales to paper-size datasets): the accelerator holds O(objects·D) (the centres) plus
one batch. Views are embedded in full batches that span objects and reduced a chunk of objects at a time (objects
with the same number of views together, one batched matmul/top-k per chunk instead of a small one per object);
per-view embeddings, when kept (for the `reuse` mode or statistics), live in host memory.
"""

from __future__ import annotations

from collections import deque
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


def knn_weighted_centres(
    z: torch.Tensor, k: int = 5, weight: Weight = "inv_cos", renormalise: bool = False
) -> torch.Tensor:
    """`knn_weighted_centre` of G objects with the same number of views at once: z [G,n,D] -> centres [G,D]
    (one batched matmul and top-k; the same rules, the same result up to float rounding)."""
    if z.dim() != 3 or z.shape[1] == 0:
        raise ValueError(f"knn_weighted_centres: need [G, n>0, D] embeddings, got {tuple(z.shape)}")
    n = z.shape[1]
    z = z.float()
    k_eff = min(k, n - 1)
    if k_eff == 0:
        c = z[:, 0].clone()
    else:
        sim = torch.bmm(z, z.transpose(1, 2))
        sim.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
        nn_sim = sim.topk(k_eff, dim=2).values  # [G, n, k_eff]
        if weight == "inv_cos":
            s = nn_sim.mean(2)
            w = torch.where(s != 0, 1.0 / (s + 1e-8), torch.zeros_like(s))
        else:
            dist = (2.0 - 2.0 * nn_sim).clamp_min(0).sqrt().sum(2)
            w = 1.0 / (dist + 1e-8)
        total = w.sum(1, keepdim=True)
        w = torch.where(total > 1e-12, w / total, torch.full_like(w, 1.0 / n))
        c = (w[:, :, None] * z).sum(1)
    return F.normalize(c, dim=-1) if renormalise else c


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
    batched: bool = True,
    chunk_rows: int = 8192,
) -> MinedSet:
    """Reduce a stream of (object index, global row indices [n], embeddings [n,D]) into centres and hard sets.

    Objects not in the stream (another rank's shard) keep zero centres and no hard views, so shards can be
    combined by summation (`ovt.train.distributed.all_reduce_mined`). `batched` (default) reduces the stream in
    chunks of about `chunk_rows` views, objects with the same view count together (`reduce_objects`); False is
    the reference loop, one object at a time (`knn_weighted_centre`, `hard_views`): the same sets, centres equal
    up to float rounding.
    """
    centres = torch.zeros(n_objects, dim)
    hard = torch.zeros(n_rows, dtype=torch.bool)
    cos = torch.zeros(n_rows)
    kw = dict(knn=knn, hard_k=hard_k, weight=weight, renormalise=renormalise)
    if not batched:
        for obj, rows, z in emb_of_object:
            z = F.normalize(z.float().cpu(), dim=-1)
            c = knn_weighted_centre(z, knn, weight, renormalise)
            centres[obj] = c
            cos[rows] = F.cosine_similarity(z, c[None], dim=-1)
            hard[rows[hard_views(z, c, hard_k)]] = True
        return MinedSet(centres, hard, cos)
    chunk: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    held = 0
    for item in emb_of_object:
        chunk.append(item)
        held += item[1].numel()
        if held >= chunk_rows:
            reduce_objects(chunk, centres, hard, cos, **kw)  # type: ignore[arg-type]
            chunk, held = [], 0
    if chunk:
        reduce_objects(chunk, centres, hard, cos, **kw)  # type: ignore[arg-type]
    return MinedSet(centres, hard, cos)


def reduce_objects(
    items: list[tuple[int, torch.Tensor, torch.Tensor]],
    centres: torch.Tensor,
    hard: torch.Tensor,
    cos: torch.Tensor,
    *,
    knn: int,
    hard_k: int,
    weight: Weight,
    renormalise: bool,
    max_sim: int = 1 << 22,
) -> None:
    """Centres, cosines and hard views of `items` (obj, rows [n], z [n,D]) into `centres`/`cos`/`hard`, batched:
    objects with the same view count n go through `knn_weighted_centres` together, at most `max_sim` similarity
    entries (G·n²) at a time. Hard views: the stable ascending sort per object, as `hard_views` (ties: lower
    index first)."""
    by_n: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    for obj, rows, z in items:
        if rows.numel():
            by_n.setdefault(rows.numel(), []).append((obj, rows, z))
    for n, same in by_n.items():
        step = max(1, max_sim // (n * n))
        for i in range(0, len(same), step):
            part = same[i : i + step]
            objs = torch.tensor([o for o, _, _ in part], dtype=torch.long)
            rows = torch.stack([r for _, r, _ in part])  # [G, n]
            z = F.normalize(torch.stack([e.float().cpu() for _, _, e in part]), dim=-1)  # [G, n, D]
            c = knn_weighted_centres(z, knn, weight, renormalise)
            centres[objs] = c
            cs = F.cosine_similarity(z, c[:, None], dim=-1)  # [G, n]
            cos[rows] = cs
            order = torch.sort(cs, dim=1, stable=True).indices[:, : min(hard_k, n)]
            hard[rows.gather(1, order)] = True


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
    `fast` (default): full batches across objects (`stream_batched`) and the batched reduction; False is the
    previous path (`stream_grouped`, one object at a time), kept as the reference for tests and benchmarks.
    """

    def __init__(self, cfg, ctx, rows_of_object: list[torch.Tensor], n_rows: int, dim: int, *, fast: bool = True):
        self.cfg, self.ctx, self.rows_of_object, self.n_rows, self.dim = cfg, ctx, rows_of_object, n_rows, dim
        self.fast = fast
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
                    if rows.numel() == 0:  # every view dropped as unreadable: nothing to mine (as the full pass)
                        continue
                    z = self.reuse_emb[rows].clone()
                    unseen = self.reuse_stamp[rows] < 0  # dropped by drop_last: embed now
                    if unseen.any():
                        fresh += int(unseen.sum())
                        z[unseen] = embed_rows(rows[unseen]).float().cpu()
                    yield o, rows, z

            it = stream()
        else:
            batches = stream_batched if self.fast else stream_grouped
            it = batches(self.rows_of_object, objs, embed_rows, m.batch_size)
        mined = mine_from_embeddings(
            it,
            len(self.rows_of_object),
            self.n_rows,
            self.dim,
            knn=m.knn,
            hard_k=m.hard_k,
            weight=m.weight,
            renormalise=m.renormalise_centre,
            batched=self.fast,
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
    """Like `stream_objects`, but forwards span objects: the objects' rows, concatenated in order, are embedded in
    consecutive slices of exactly `batch_size` rows (the last one shorter), however few views each object has
    (~26 here, so per-object forwards would run small, slow batches), and an object is yielded once all its views
    are embedded. The calls follow the concatenated order, so they are the very batches `rows.split(batch_size)`
    announces to a streaming input plan. Host memory holds one batch's embeddings plus the objects it straddles."""
    pending: deque[tuple[int, torch.Tensor]] = deque()  # objects whose views are (being) embedded, in order
    parts: list[torch.Tensor] = []  # embeddings not yet handed out, in row order
    held = 0
    batch: list[torch.Tensor] = []
    n = 0

    def emit(z_new: torch.Tensor):
        nonlocal held, parts
        parts.append(z_new.detach().float().cpu())
        held += z_new.shape[0]
        if not pending or pending[0][1].numel() > held:
            return
        z = torch.cat(parts) if len(parts) > 1 else parts[0]
        start = 0
        while pending and pending[0][1].numel() <= held - start:
            o, r = pending.popleft()
            yield o, r, z[start : start + r.numel()]
            start += r.numel()
        parts = [z[start:]] if start < held else []
        held -= start

    for o in objects:
        rows = rows_of_object[o]
        if rows.numel() == 0:
            continue
        pending.append((o, rows))
        s = 0
        while s < rows.numel():
            take = min(batch_size - n, rows.numel() - s)
            batch.append(rows[s : s + take])
            n += take
            s += take
            if n == batch_size:
                yield from emit(embed(torch.cat(batch) if len(batch) > 1 else batch[0]))
                batch, n = [], 0
    if batch:
        yield from emit(embed(torch.cat(batch) if len(batch) > 1 else batch[0]))


def stream_grouped(
    rows_of_object: list[torch.Tensor],
    objects: Iterable[int],
    embed: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
):
    """The previous batching, kept as the reference path (`Miner(fast=False)`, benchmarks/bench_mining.py): groups
    of whole objects of at least `batch_size` rows, each embedded in `batch_size` slices (so every group ends in a
    short remainder batch)."""
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

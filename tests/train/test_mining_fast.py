"""The max step's fast path against the reference one: batched reduction vs the per-object loop, full-batch
streaming vs the grouped batches, the Miner both ways, and a tiny trainer's mining pass with LoRA folded."""

import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ovt.train.mining import (
    Miner,
    knn_weighted_centre,
    knn_weighted_centres,
    mine_from_embeddings,
    stream_batched,
    stream_grouped,
    stream_objects,
)

KNN, HARD_K, D = 5, 3, 16
# 1 view (its own centre), 2 and 5 (≤ knn: k_eff = n-1), 6 = knn+1, more; several objects share a count, and
# one object has no view at all (skipped)
SIZES = [1, 2, 5, 6, 9, 26, 26, 26, 1, 5, 0, 13, 40, 26, 3]


def _data(seed: int, sizes=SIZES):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    perm = torch.randperm(n, generator=g)  # objects' rows are not contiguous in the table
    rows, start = [], 0
    for k in sizes:
        rows.append(perm[start : start + k].sort().values)
        start += k
    emb = torch.randn(n, D, generator=g)  # continuous random: no ties in cosines or top-k
    return rows, emb, n


def _mine(rows, emb, n, stream, objs, *, batched, weight, renormalise, batch=7, **kw):
    return mine_from_embeddings(
        stream(rows, objs, lambda r: emb[r], batch),
        len(rows),
        n,
        D,
        knn=KNN,
        hard_k=HARD_K,
        weight=weight,
        renormalise=renormalise,
        batched=batched,
        **kw,
    )


CASES = list(itertools.product(["inv_cos", "inv_dist"], [False, True], [0, 1, 2]))


@pytest.mark.parametrize(("weight", "renormalise", "seed"), CASES)
def test_batched_reduction_equals_per_object_loop(weight, renormalise, seed):
    rows, emb, n = _data(seed)
    objs = range(len(rows))
    ref = _mine(rows, emb, n, stream_objects, objs, batched=False, weight=weight, renormalise=renormalise)
    # small chunks and a small similarity budget: chunk boundaries and split count-groups are exercised too
    for kw in ({}, {"chunk_rows": 10}, {"chunk_rows": 1}):
        new = _mine(rows, emb, n, stream_batched, objs, batched=True, weight=weight, renormalise=renormalise, **kw)
        torch.testing.assert_close(new.centres, ref.centres, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(new.cos_to_centre, ref.cos_to_centre, atol=1e-6, rtol=1e-5)
        assert torch.equal(new.hard, ref.hard)
        assert new.stats() == pytest.approx(ref.stats(), abs=1e-6)
    # per object: min(hard_k, n) hard views, an empty object none and a zero centre
    for r in rows:
        assert int(ref.hard[r].sum()) == min(HARD_K, r.numel())
    assert ref.centres[SIZES.index(0)].abs().sum() == 0


@pytest.mark.parametrize("weight", ["inv_cos", "inv_dist"])
def test_max_sim_budget_splits_groups_without_changing_results(weight):
    from ovt.train.mining import reduce_objects

    rows, emb, n = _data(3, [26] * 7 + [4] * 3)
    items = [(o, r, emb[r]) for o, r in enumerate(rows)]
    out = []
    for max_sim in (1 << 22, 26 * 26 * 2, 1):
        c, h, cs = torch.zeros(len(rows), D), torch.zeros(n, dtype=torch.bool), torch.zeros(n)
        reduce_objects(items, c, h, cs, knn=KNN, hard_k=HARD_K, weight=weight, renormalise=False, max_sim=max_sim)
        out.append((c, h, cs))
    for c, h, cs in out[1:]:
        torch.testing.assert_close(c, out[0][0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(cs, out[0][2], atol=1e-6, rtol=1e-5)
        assert torch.equal(h, out[0][1])


@pytest.mark.parametrize(("weight", "renormalise"), itertools.product(["inv_cos", "inv_dist"], [False, True]))
@pytest.mark.parametrize("n", [1, 2, 5, 6, 26])
def test_knn_weighted_centres_is_the_per_object_rule(weight, renormalise, n):
    g = torch.Generator().manual_seed(n)
    z = F.normalize(torch.randn(4, n, D, generator=g), dim=-1)
    batched = knn_weighted_centres(z, KNN, weight, renormalise)
    for i in range(4):
        torch.testing.assert_close(batched[i], knn_weighted_centre(z[i], KNN, weight, renormalise), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="need"):
        knn_weighted_centres(torch.zeros(2, 0, D))


def test_degenerate_weights_fall_back_to_the_mean_per_object():
    # object 0: two orthogonal views (mean cosine 0 -> zero weights -> the plain mean); object 1: a normal one
    z = torch.stack([torch.tensor([[1.0, 0.0], [0.0, 1.0]]), F.normalize(torch.tensor([[1.0, 0.2], [1.0, 0.3]]))])
    c = knn_weighted_centres(z, k=5)
    assert c[0].tolist() == pytest.approx([0.5, 0.5])
    torch.testing.assert_close(c[1], knn_weighted_centre(z[1], k=5))


@pytest.mark.parametrize("batch", [1, 4, 7, 26, 27, 64, 1000])
def test_stream_batched_runs_full_batches_in_plan_order(batch):
    rows, emb, n = _data(0)
    objs = [o for o in range(len(rows)) if o % 3 != 1]  # a rank's shard
    calls = []

    def embed(r):
        calls.append(r.clone())
        return emb[r] * 2

    got = list(stream_batched(rows, objs, embed, batch))
    planned = torch.cat([rows[o] for o in objs]).split(batch)  # what Trainer.mine announces to the inputs
    assert len(calls) == len(planned) and all(torch.equal(a, b) for a, b in zip(calls, planned))
    assert [o for o, _, _ in got] == [o for o in objs if rows[o].numel()]
    for o, r, z in got:
        assert torch.equal(r, rows[o]) and torch.equal(z, emb[rows[o]] * 2)


def test_stream_batched_holds_one_batch_plus_straddling_objects():
    rows = [torch.arange(i * 5, i * 5 + 5) for i in range(40)]
    seen = []

    def embed(r):
        seen.append(r.numel())
        return torch.zeros(r.numel(), 2)

    it = stream_batched(rows, range(40), embed, 8)
    for o, _, _ in it:
        # when object o comes out, the forwards so far cover o's views and at most one batch beyond them
        assert sum(seen) <= 5 * (o + 1) + 8
    assert seen[:-1] == [8] * (len(seen) - 1)


def _miner(mode: str, fast: bool, rows, n):
    cfg = SimpleNamespace(mode=mode, batch_size=7, knn=KNN, hard_k=HARD_K, weight="inv_cos", renormalise_centre=False)
    ctx = SimpleNamespace(enabled=False, rank=0, world=1, device=torch.device("cpu"))
    return Miner(cfg, ctx, rows, n, D, fast=fast)


@pytest.mark.parametrize("mode", ["full_pass", "reuse"])
def test_miner_fast_equals_reference(mode):
    rows, emb, n = _data(5)
    out = {}
    for fast in (False, True):
        m = _miner(mode, fast, rows, n)
        if mode == "reuse":  # epoch 1: most rows recorded by the steps, a few embedded fresh
            seen = torch.arange(n)[torch.arange(n) % 4 != 0]
            m.record(seen, emb[seen], step=3)
        out[fast], ev = m.mine(1, lambda r: emb[r])
        assert ev["mode"] == mode
    torch.testing.assert_close(out[True].centres, out[False].centres, atol=1e-6, rtol=1e-5)
    assert torch.equal(out[True].hard, out[False].hard)


def test_grouped_reference_stream_still_mines_the_same():
    rows, emb, n = _data(6)
    kw = dict(batched=False, weight="inv_cos", renormalise=False)
    a = _mine(rows, emb, n, stream_grouped, range(len(rows)), **kw)
    b = _mine(rows, emb, n, stream_batched, range(len(rows)), **kw)
    assert torch.equal(a.centres, b.centres) and torch.equal(a.hard, b.hard)


@pytest.mark.parametrize("cache_prefix", [True, False])
def test_trainer_mines_the_same_both_ways_after_training(tree, tmp_path, cache_prefix):
    """A tiny trainer with trained (non-zero) adapters: the fast pass (LoRA folded, full batches, batched
    reduction) mines what the reference pass mines, and leaves the weights and torch's flags as they were."""
    from ovt.train.data import build_table
    from ovt.train.distributed import DistContext
    from ovt.train.loop import Trainer
    from tests.train.fixtures import build_tiny, tiny_model_cfg, tiny_train_cfg

    cfg = tiny_train_cfg(epochs=1, deterministic=True, data={"cache_prefix": cache_prefix})
    torch.manual_seed(0)
    model = build_tiny(tiny_model_cfg())
    tr = Trainer(model, build_table(cfg.data, *tree), cfg, variant="ovt", seed=0, work_dir=tmp_path,
                 ctx=DistContext(), key="k")  # fmt: skip
    tr.prepare(resume=False)
    tr.mined = tr.mine(0)
    order = tr.epoch_order(0)
    for s in range(tr.steps_per_epoch):
        tr.train_step(order[s * 8 : (s + 1) * 8], tr.twod.rows(s), 0)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = {}
    for fast in (False, True):
        tr.miner.fast = fast
        out[fast] = tr.mine(1)
    torch.testing.assert_close(out[True].centres, out[False].centres, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[True].cos_to_centre, out[False].cos_to_centre, atol=1e-5, rtol=1e-4)
    assert torch.equal(out[True].hard, out[False].hard)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert torch.utils.deterministic.fill_uninitialized_memory  # restored after the pass
    assert [e["mode"] for e in tr.tracker.events] == ["full_pass"] * 3
    tr.inputs.close()


def test_inference_pass_restores_the_fill_flag_on_error():
    from ovt.train.loop import inference_pass
    from tests.train.fixtures import build_tiny, tiny_model_cfg

    model = build_tiny(tiny_model_cfg())
    before = torch.utils.deterministic.fill_uninitialized_memory
    with pytest.raises(RuntimeError, match="boom"), inference_pass(model):
        assert not torch.utils.deterministic.fill_uninitialized_memory
        raise RuntimeError("boom")
    assert torch.utils.deterministic.fill_uninitialized_memory == before

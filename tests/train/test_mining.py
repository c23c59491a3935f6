import math

import pytest
import torch
import torch.nn.functional as F

from ovt.train.mining import (
    hard_views,
    knn_weighted_centre,
    mine_from_embeddings,
    nearest_other_centre,
    stream_batched,
    stream_objects,
)

R2 = math.sqrt(2) / 2


def _abc():
    # a = e1, b = e2, c = (e1+e2)/√2: cos(a,b)=0, cos(a,c)=cos(b,c)=1/√2
    return torch.tensor([[1.0, 0.0], [0.0, 1.0], [R2, R2]])


def test_centre_inv_cos_by_hand():
    # k=2: s = [1/(2√2), 1/(2√2), 1/√2] -> w ∝ [2√2, 2√2, √2] -> [0.4, 0.4, 0.2]
    c = knn_weighted_centre(_abc(), k=2, weight="inv_cos")
    x = 0.4 + 0.2 * R2
    assert c.tolist() == pytest.approx([x, x], abs=1e-5)


def test_centre_inv_dist_by_hand():
    # distances: |a-b| = √2, |a-c| = |b-c| = sqrt(2-√2); w = 1/sum(kNN distances), normalised
    dab, dac = math.sqrt(2), math.sqrt(2 - math.sqrt(2))
    w = torch.tensor([1 / (dab + dac), 1 / (dab + dac), 1 / (2 * dac)])
    w = w / w.sum()
    x = float(w[0] + w[2] * R2)
    c = knn_weighted_centre(_abc(), k=2, weight="inv_dist")
    assert c.tolist() == pytest.approx([x, x], abs=1e-5)


def test_weight_direction_outlier():
    # five views near e1, one outlier at e2: inv_cos (official) pulls the centre toward the outlier
    near = F.normalize(torch.tensor([[1.0, 0.05 * i, 0.0] for i in range(5)]), dim=-1)
    z = torch.cat([near, torch.tensor([[0.0, 1.0, 0.0]])])
    c_cos = knn_weighted_centre(z, 5, "inv_cos", renormalise=True)
    c_dist = knn_weighted_centre(z, 5, "inv_dist", renormalise=True)
    assert c_cos[1] > c_dist[1]
    assert F.cosine_similarity(c_cos, z[5], dim=0) > F.cosine_similarity(c_dist, z[5], dim=0)


def test_symmetric_ring_centre_and_renormalise():
    th = torch.tensor([0, 0.5, 1.0, 1.5]) * math.pi
    z = F.normalize(torch.stack([0.5 * th.cos(), 0.5 * th.sin(), torch.ones(4)], 1), dim=-1)
    c = knn_weighted_centre(z, k=2)
    assert c.tolist() == pytest.approx([0, 0, 1 / math.sqrt(1.25)], abs=1e-5)
    assert knn_weighted_centre(z, k=2, renormalise=True).tolist() == pytest.approx([0, 0, 1], abs=1e-5)


def test_few_views():
    one = torch.tensor([[0.6, 0.8]])
    assert knn_weighted_centre(one, k=5).tolist() == pytest.approx([0.6, 0.8])
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # mean cosine 0 -> zero weights -> falls back to the mean
    assert knn_weighted_centre(two, k=5).tolist() == pytest.approx([0.5, 0.5])
    assert hard_views(one, one[0], 5).tolist() == [0]
    with pytest.raises(ValueError, match="need"):
        knn_weighted_centre(torch.zeros(0, 3))


def test_hard_views_are_the_outliers():
    z = F.normalize(torch.tensor([[1.0, 0.01 * i] for i in range(8)]), dim=-1)
    z[2] = F.normalize(torch.tensor([0.2, 1.0]), dim=0)
    z[6] = F.normalize(torch.tensor([0.5, 1.0]), dim=0)
    c = knn_weighted_centre(z, 5)
    assert sorted(hard_views(z, c, 2).tolist()) == [2, 6]
    assert hard_views(z, c, 1).tolist() == [2]  # the farthest first


def test_mine_streams_and_shards_add_up():
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(14, 6, generator=g), dim=-1)
    rows = [torch.arange(0, 8), torch.arange(8, 11), torch.arange(11, 14)]
    seen_batches = []

    def embed(r):
        seen_batches.append(r.numel())
        return emb[r]

    full = mine_from_embeddings(
        stream_objects(rows, range(3), embed, 3), 3, 14, 6, knn=5, hard_k=2, weight="inv_cos", renormalise=False
    )
    assert max(seen_batches) <= 3  # never more than one batch embedded at a time
    assert full.hard.sum() == 6 and full.hard[:8].sum() == 2
    # rank shards (objects 0,2 | 1) combine by summation into the same result
    a = mine_from_embeddings(
        stream_objects(rows, [0, 2], embed, 4), 3, 14, 6, knn=5, hard_k=2, weight="inv_cos", renormalise=False
    )
    b = mine_from_embeddings(
        stream_objects(rows, [1], embed, 4), 3, 14, 6, knn=5, hard_k=2, weight="inv_cos", renormalise=False
    )
    assert torch.allclose(a.centres + b.centres, full.centres)
    assert torch.equal(a.hard | b.hard, full.hard)
    for o in range(3):
        c = knn_weighted_centre(emb[rows[o]], 5)
        assert torch.allclose(full.centres[o], c, atol=1e-6)
    assert full.stats()["mined/hard_views"] == 6


def test_nearest_other_centre():
    centres = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    neg = nearest_other_centre(centres, torch.tensor([0, 2]))
    assert torch.equal(neg, centres[[1, 1]])


def test_batched_stream_fills_batches_and_mines_the_same():
    g = torch.Generator().manual_seed(1)
    emb = F.normalize(torch.randn(30, 6, generator=g), dim=-1)
    rows = [torch.arange(i, i + 3) for i in range(0, 30, 3)]  # 10 objects of 3 views
    sizes = []

    def embed(r):
        sizes.append(r.numel())
        return emb[r]

    kw = dict(knn=2, hard_k=1, weight="inv_cos", renormalise=False)
    batched = mine_from_embeddings(stream_batched(rows, range(10), embed, 8), 10, 30, 6, **kw)
    assert max(sizes) == 8 and len(sizes) < 10  # batches span objects: fewer, fuller forwards
    per_object = mine_from_embeddings(stream_objects(rows, range(10), lambda r: emb[r], 8), 10, 30, 6, **kw)
    assert torch.allclose(batched.centres, per_object.centres) and torch.equal(batched.hard, per_object.hard)

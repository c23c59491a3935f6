import random
from collections import Counter

import pytest

from ovt.acquire.split import HELDOUT, assign_splits, split_u


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def test_deterministic_and_order_independent():
    objs = [(a, "chair") for a in _ids("c", 30)] + [(a, "bed") for a in _ids("b", 12)]
    s1 = assign_splits(objs, seed=3, fraction=0.2)
    shuffled = objs[:]
    random.Random(0).shuffle(shuffled)
    assert assign_splits(shuffled, seed=3, fraction=0.2) == s1
    assert assign_splits(objs, seed=4, fraction=0.2) != s1   # the seed matters


def test_each_stratum_gets_its_rounded_share():
    objs = [(a, "chair") for a in _ids("c", 41)] + [(a, "stool") for a in _ids("s", 6)] + \
           [(a, "category:Misc") for a in _ids("m", 10)]
    s = assign_splits(objs, seed=0, fraction=0.2)
    held = Counter(st for a, st in objs if s[a] == HELDOUT)
    assert held == {"chair": 8, "stool": 1, "category:Misc": 2}


def test_heldout_are_the_lowest_hash_ranks():
    ids = _ids("x", 20)
    s = assign_splits([(a, "k") for a in ids], seed=7, fraction=0.25)
    ranked = sorted(ids, key=lambda a: split_u(7, a))
    assert {a for a in ids if s[a] == HELDOUT} == set(ranked[:5])


@pytest.mark.parametrize("seed", range(5))
def test_adding_an_object_moves_at_most_one_other_and_none_in_other_strata(seed):
    objs = [(a, "chair") for a in _ids("c", 23)] + [(a, "bed") for a in _ids("b", 9)]
    before = assign_splits(objs, seed=seed, fraction=0.2)
    for new_id in _ids("new", 10):
        after = assign_splits(objs + [(new_id, "chair")], seed=seed, fraction=0.2)
        moved = [a for a in before if after[a] != before[a]]
        assert len(moved) <= 1
        assert all(a.startswith("c") for a in moved)
        assert all(after[a] == before[a] for a, st in objs if st == "bed")


def test_fraction_zero_and_bad_fraction():
    assert set(assign_splits([("a", "k"), ("b", "k")], 0, 0.0).values()) == {"train"}
    with pytest.raises(ValueError, match="fraction"):
        assign_splits([("a", "k")], 0, 1.0)

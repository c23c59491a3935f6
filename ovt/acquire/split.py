"""The deterministic train / held-out split, by object, stratified.

Rule (exact):
1. Each object gets u = int(sha256(canonical_json([seed, "split", asset_id]))[:15], 16) / 16**15, uniform in [0, 1).
2. Its stratum is its label if it has one, else "category:<category>" (unlabelled objects are stratified by
   catalogue category instead).
3. In a stratum of n objects, the k = floor(fraction * n + 0.5) objects with the smallest u (ties by asset_id) are
   held out; the rest are train.

Properties: the same (seed, asset ids, strata, fraction) always give the same split, whatever the input order; every
class of n >= 3 objects gets its rounded share of held-out objects (a pure hash threshold would leave ~26 % of
6-object classes with none at fraction 0.2); adding one object never moves an object of another stratum, and moves
at most one object of its own stratum (the one at the quota boundary). A class that crosses `min_per_class` when
objects are added moves its objects from their category strata into the new class stratum.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ovt.io import stable_digest

TRAIN, HELDOUT = "train", "heldout"


def split_u(seed: int, asset_id: str) -> float:
    return int(stable_digest([seed, "split", asset_id])[:15], 16) / 16**15


def stratum(label: str | None, category: str) -> str:
    return label if label is not None else f"category:{category}"


def assign_splits(objects: list[tuple[str, str]], seed: int, fraction: float) -> dict[str, str]:
    """`objects` = [(asset_id, stratum)] -> {asset_id: "train" | "heldout"}."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"heldout fraction must be in [0, 1), got {fraction}")
    groups: dict[str, list[str]] = defaultdict(list)
    for aid, s in objects:
        groups[s].append(aid)
    out: dict[str, str] = {}
    for members in groups.values():
        ranked = sorted(members, key=lambda a: (split_u(seed, a), a))
        k = math.floor(fraction * len(ranked) + 0.5)
        for i, aid in enumerate(ranked):
            out[aid] = HELDOUT if i < k else TRAIN
    return out

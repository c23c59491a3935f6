"""The deterministic train / validation / test split: by group of near-duplicate objects, stratified by label.

Groups (so that near-duplicates never straddle splits): objects are joined (union-find) when they share
- `geometry`: the same fingerprint = vertex and face counts and bounding-box extents to 4 significant digits (the same
  mesh with another texture or material is another asset id, but the same shape);
- `name_family`: the same family key, scoped by source library. The key is the mesh file's stem cut before its first
  number (`sitFemale01` -> "sit female", `window_2x3_regular` -> "window"). A family larger than `max_family_size`
  is refined to the stem up to and including its first number (`window_2x3`, `window_2x3_arched` and
  `window_2x3_regular` -> "window 2x3"), then the second, ...; a family still too large at the full stem is a
  generic name ("model", "mesh"), not a set of variants, and merges nothing.
A group is named after its smallest asset id (`group` in the manifest).

Split rule (exact):
1. A group's stratum is the most common label among its members (ties: alphabetical); a group with no labelled
   member goes to train whole (unlabelled objects only carry captions). Unlabelled members of a labelled group
   follow their group, so that no near-duplicate of a test object is trained on.
2. Each group gets u = int(sha256(canonical_json([seed, "split", group]))[:15], 16) / 16**15.
3. In a stratum with n labelled objects, the quotas are k_test = floor(test_fraction * n + 0.5) and
   k_val = floor(validation_fraction * n + 0.5). Walking its groups by (u, group), a group of s labelled objects
   joins test while s <= 2 * (k_test - taken) (it brings the count closer to the quota, ties included); the groups
   left over are walked again for validation; the rest are train.
Properties: same inputs -> same split whatever the order; singleton groups reproduce a plain per-object stratified
split; adding an object only moves groups of its own stratum.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from ovt.io import stable_digest

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)

_TOKEN = re.compile(r"\d+(?:[x×]\d+)*|[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_NUMBER = re.compile(r"\d+(?:[x×]\d+)*")


@dataclass(frozen=True)
class SplitObject:
    asset_id: str
    label: str | None
    scope: str  # where names are comparable (source + library)
    stem: str  # mesh file stem (name families)
    fingerprint: str | None  # geometry fingerprint, None = unknown


def split_u(seed: int, key: str) -> float:
    return int(stable_digest([seed, "split", key])[:15], 16) / 16**15


def _sig(x: float, digits: int = 4) -> str:
    return f"{x:.{digits - 1}e}" if x else "0"


def geometry_fingerprint(n_vertices: int, n_faces: int, extents: Sequence[float] | None) -> str | None:
    if not extents:
        return None
    return f"v{n_vertices}:f{n_faces}:" + ":".join(_sig(float(e)) for e in extents)


def stem_tokens(stem: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(stem)]


def family_key(tokens: list[str], level: int) -> str:
    """Level 0: the tokens before the first number; level L >= 1: up to and including the L-th number."""
    numbers = [i for i, t in enumerate(tokens) if _NUMBER.fullmatch(t)]
    if level == 0:
        cut = numbers[0] if numbers else len(tokens)
    else:
        cut = numbers[level - 1] + 1 if len(numbers) >= level else len(tokens)
    return " ".join(tokens[:cut])


def name_families(objects: Sequence[SplitObject], max_family_size: int) -> dict[str, str]:
    """asset_id -> family key for objects that belong to a family of 2..max_family_size members."""
    out: dict[str, str] = {}
    pending: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for o in objects:
        pending[o.scope].append((o.asset_id, stem_tokens(o.stem)))
    for scope, members in pending.items():
        _refine(scope, members, 0, max_family_size, out)
    return out


def _refine(scope: str, members: list[tuple[str, list[str]]], level: int, cap: int, out: dict[str, str]) -> None:
    by_key: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for aid, toks in members:
        key = family_key(toks, level)
        if key:
            by_key[key].append((aid, toks))
    for key, fam in by_key.items():
        if len(fam) < 2:
            continue
        if len(fam) <= cap:
            for aid, _ in fam:
                out[aid] = f"{scope}|{key}"
            continue
        finer = [(a, t) for a, t in fam if family_key(t, level + 1) != key]
        if finer:  # some members have more numbers: split the family on the next one
            _refine(scope, fam, level + 1, cap, out)
        # else: a generic name shared by more than `cap` objects: no family


class _UnionFind:
    def __init__(self, items: Iterable[str]):
        self.parent = {i: i for i in items}

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def assign_groups(objects: Sequence[SplitObject], group_by: Sequence[str], max_family_size: int) -> dict[str, str]:
    """asset_id -> group id (the smallest asset id of its group)."""
    uf = _UnionFind(o.asset_id for o in objects)
    keys: dict[str, list[str]] = defaultdict(list)
    if "geometry" in group_by:
        for o in objects:
            if o.fingerprint is not None:
                keys["g|" + o.fingerprint].append(o.asset_id)
    if "name_family" in group_by:
        for aid, fam in name_families(objects, max_family_size).items():
            keys["n|" + fam].append(aid)
    for members in keys.values():
        for other in members[1:]:
            uf.union(members[0], other)
    return {o.asset_id: uf.find(o.asset_id) for o in objects}


def _take(ranked: list[tuple[str, int]], k: int) -> set[str]:
    taken, chosen = 0, set()
    for g, s in ranked:
        if taken < k and s <= 2 * (k - taken):
            chosen.add(g)
            taken += s
    return chosen


def assign_splits(
    objects: Sequence[SplitObject], groups: dict[str, str], seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, str]:
    """asset_id -> "train" | "validation" | "test" (rule in the module docstring)."""
    for name, f in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(f"validation_fraction + test_fraction must be < 1, got {validation_fraction + test_fraction}")
    labels: dict[str, Counter] = defaultdict(Counter)
    for o in objects:
        if o.label is not None:
            labels[groups[o.asset_id]][o.label] += 1
    strata: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for g, counts in labels.items():
        top = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        strata[top].append((g, sum(counts.values())))
    group_split: dict[str, str] = {}
    for members in strata.values():
        n = sum(s for _, s in members)
        ranked = sorted(members, key=lambda gs: (split_u(seed, gs[0]), gs[0]))
        test = _take(ranked, math.floor(test_fraction * n + 0.5))
        val = _take([gs for gs in ranked if gs[0] not in test], math.floor(validation_fraction * n + 0.5))
        for g, _ in ranked:
            group_split[g] = TEST if g in test else VALIDATION if g in val else TRAIN
    return {o.asset_id: group_split.get(groups[o.asset_id], TRAIN) for o in objects}


def split_object(row: dict) -> SplitObject:
    """The split's view of one manifest row."""
    src_ref = row.get("source_ref") or ""
    library = src_ref.split(":", 1)[0] if row.get("source") == "sweethome3d" else ""
    stem = posixpath.splitext(posixpath.basename(row.get("mesh") or ""))[0]
    return SplitObject(
        asset_id=row["asset_id"],
        label=row.get("label"),
        scope=f"{row.get('source')}:{library}",
        stem=stem,
        fingerprint=geometry_fingerprint(row["n_vertices"], row["n_faces"], row.get("extents")),
    )

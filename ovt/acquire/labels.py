"""Evaluation labels: the head noun of an object's English name.

Sweet Home 3D names are nearly unique ("Desk lamp", "Office chair", "Corner sofa"), and its 12 categories are rooms,
not object classes, so the class is the name's head noun: its last word of two or more letters, lower-cased
("Bed 140x190" -> "bed", "Lamp (ceiling)" -> "lamp"). Synonyms are merged by a table (couch -> sofa, light -> lamp);
heads in `drop` and heads with fewer than `min_per_class` objects get no label (null), so that every evaluation
class has enough objects to be split into train and held-out.
"""

from __future__ import annotations

import re
from collections import Counter

from ovt.acquire.config import LabelParams

_PARENS = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_WORD = re.compile(r"[^\W\d_]{2,}")  # letters only, two or more (skips "x" in "140x190")


def head_noun(name: str) -> str | None:
    words = _WORD.findall(_PARENS.sub(" ", name).lower())
    return words[-1] if words else None


def raw_label(name: str, hint: str | None, cfg: LabelParams) -> str | None:
    """The label before the class-size rule: a source hint (LVIS category) wins over the name's head noun."""
    head = hint.strip().lower().replace("_", " ") if hint else head_noun(name)
    if not head:
        return None
    head = cfg.merges.get(head, head)
    return None if head in cfg.drop else head


def assign_labels(raw: list[str | None], cfg: LabelParams) -> list[str | None]:
    """Keep a raw label only if at least `min_per_class` objects share it."""
    counts = Counter(r for r in raw if r is not None)
    return [r if r is not None and counts[r] >= cfg.min_per_class else None for r in raw]

"""What every asset source yields: a candidate asset (metadata now, file bytes on demand).

Sources enumerate cheaply (catalogue metadata only) so that metadata filters and `max_assets` run before any
mesh is read; the bytes are read by `load_files()` only for candidates that survive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol


class SourceError(RuntimeError):
    """A configured source cannot be used at all (missing package, unreadable catalogue, bad CSV)."""


class ItemError(RuntimeError):
    """One candidate asset cannot be read; it is logged to failures.jsonl and skipped.

    `reason` is a short machine-readable code (e.g. "unsafe_path", "too_large") used for the failure counts.
    """

    def __init__(self, reason: str, detail: str, item: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.item = item  # set when a source reports a failure while enumerating (no candidate to attach it to)

    def __reduce__(self):  # rebuilt from its fields when it crosses a process boundary (the inspection pool)
        return (type(self), (self.reason, self.detail, self.item))


@dataclass(frozen=True)
class AssetCandidate:
    source: str
    source_ref: str  # where the asset is inside its source (library:item, CSV path, uid)
    name: str
    category: str
    mesh: str  # path of the mesh file among the asset's files
    load_files: Callable[[], dict[str, bytes]] = field(repr=False, compare=False)
    tags: tuple[str, ...] = ()
    licence: str | None = None
    creator: str | None = None
    rotation: tuple[tuple[float, ...], ...] | None = None  # 3x3 row-major: raw mesh -> canonical (Y up, +Z front)
    dims_cm: dict[str, float] | None = None
    label_hint: str | None = None  # a class name the source already knows (objaverse LVIS category)
    # Files stored with the asset but not part of its identity (licence/attribution texts).
    attribution: frozenset[str] = frozenset()

    @property
    def item(self) -> str:
        return f"{self.source}:{self.source_ref}"


class AssetSource(Protocol):
    name: str

    def candidates(self) -> Iterator[AssetCandidate | ItemError]:
        """Yield candidates (or ItemError for an entry that is broken in the catalogue itself), deterministically.

        Raise SourceError if the source as a whole is unusable.
        """
        ...

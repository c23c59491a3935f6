"""What every captioner sees (a `View`) and returns (a `Caption`), and the backend interface.

A captioner is batched: the stage hands it a list of views (all views of a few objects) and per-view seeds, and it
returns one `Caption` per view, in order, carrying its provenance (backend, model, version, prompt, seed, view key).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

from PIL import Image


@dataclass
class View:
    """One rendered view joined with its asset's metadata (render row + acquire manifest row)."""

    key: str  # `<asset_id>_<view:03d>`, the webdataset sample key
    asset_id: str
    view: int
    image: Image.Image  # RGB, or RGBA when the render is transparent
    azimuth: float  # degrees; 0 = the asset's front (+Z), see viewpoint.py
    elevation: float  # degrees; >0 camera above the object
    name: str | None = None
    category: str | None = None
    label: str | None = None
    tags: list[str] = field(default_factory=list)
    dims_cm: dict[str, float] | None = None
    obj_id: int | None = None
    img_id: int | None = None
    path: str | None = None  # MVCap-style `./views/<asset_id>/<view:03d>.png`

    def field_value(self, name: str) -> str | None:
        value = getattr(self, name)
        return value if isinstance(value, str) and value.strip() else None


@dataclass
class Caption:
    """One caption plus the provenance the contract asks for (docs/architecture.md, caption side-car rows)."""

    key: str
    caption: str
    backend: str
    model: str
    model_version: str
    prompt: str
    guided: bool
    seed: int

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


class Captioner(Protocol):
    backend: str
    model: str
    model_version: str

    def describe(self) -> dict[str, Any]:
        """Everything that determines this captioner's output (goes into the shards' content keys)."""

    def caption(self, views: Sequence[View], seeds: Sequence[int]) -> list[Caption]:
        """One caption per view, in order."""


def guidance_category(view: View, fields: Sequence[str]) -> str | None:
    """The words the guided prompt names the object by: the first non-empty field (default label, then name)."""
    for name in fields:
        value = view.field_value(name)
        if value:
            return value.strip().lower()
    return None

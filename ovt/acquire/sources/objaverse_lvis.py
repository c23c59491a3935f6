"""Objaverse 1.0 through the `objaverse` package: LVIS categories -> uids -> GLB files + annotations.

The package downloads from Hugging Face into ~/.objaverse/hf-objaverse-v1 on first use (no network here: tests
replace its download function with local fixtures). GLB is glTF: Y up, front +Z, so no rotation is recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

from ovt.acquire.candidate import AssetCandidate, ItemError, SourceError
from ovt.acquire.config import ObjaverseParams

log = logging.getLogger(__name__)


def _creator(ann: dict[str, Any]) -> str | None:
    user = ann.get("user") or {}
    return user.get("displayName") or user.get("username") or None


def _licence(ann: dict[str, Any]) -> str | None:
    lic = ann.get("license")
    if lic is None:
        return None
    # Sketchfab licence slugs as stored in the annotations ("by", "by-sa", "cc0", ...).
    return {
        "by": "CC-BY 4.0",
        "by-sa": "CC-BY-SA 4.0",
        "by-nd": "CC-BY-ND 4.0",
        "by-nc": "CC-BY-NC 4.0",
        "by-nc-sa": "CC-BY-NC-SA 4.0",
        "by-nc-nd": "CC-BY-NC-ND 4.0",
        "cc0": "CC0",
    }.get(lic, lic)


class ObjaverseSource:
    name = "objaverse"

    def __init__(self, cfg: ObjaverseParams):
        self.cfg = cfg

    def select_uids(self, lvis: dict[str, list[str]]) -> list[tuple[str, str]]:
        """(category, uid) pairs: per category its first `max_per_category` uids in sorted order (deterministic)."""
        unknown = [c for c in self.cfg.lvis_categories if c not in lvis]
        if unknown:
            raise SourceError(
                f"acquire.objaverse.lvis_categories: {unknown} are not LVIS categories (e.g. {sorted(lvis)[:8]})"
            )
        pairs, seen = [], set()
        for cat in self.cfg.lvis_categories:
            for uid in sorted(lvis[cat])[: self.cfg.max_per_category]:
                if uid not in seen:  # an object listed under two categories keeps the first one asked for
                    seen.add(uid)
                    pairs.append((cat, uid))
        return pairs

    def candidates(self) -> Iterator[AssetCandidate | ItemError]:
        try:
            import objaverse
        except ImportError as err:
            raise SourceError(f"the objaverse source needs the `objaverse` package ({err})") from None
        try:
            lvis = objaverse.load_lvis_annotations()
            pairs = self.select_uids(lvis)
            uids = [u for _, u in pairs]
            annotations = objaverse.load_annotations(uids)
            paths = objaverse.load_objects(uids, download_processes=self.cfg.download_processes)
        except SourceError:
            raise
        except OSError as err:  # urllib errors are OSErrors: no network, no cache
            raise SourceError(
                f"objaverse: cannot load annotations/objects ({err}); the package downloads from "
                "huggingface.co into ~/.objaverse unless they are already there"
            ) from err
        for cat, uid in pairs:
            ann = annotations.get(uid) or {}
            path = paths.get(uid)
            if path is None:
                yield ItemError("missing_file", f"objaverse returned no file for uid {uid}", item=f"{self.name}:{uid}")
                continue
            tags = tuple(t.get("name", "") for t in ann.get("tags", []) if isinstance(t, dict) and t.get("name"))
            yield AssetCandidate(
                source=self.name,
                source_ref=uid,
                name=(ann.get("name") or cat.replace("_", " ")).strip(),
                category=cat,
                mesh=f"{uid}.glb",
                tags=tags,
                licence=_licence(ann),
                creator=_creator(ann),
                label_hint=cat,
                load_files=_Loader(Path(path), f"{uid}.glb"),
            )


class _Loader:
    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name

    def __call__(self) -> dict[str, bytes]:
        try:
            return {self.name: self.path.read_bytes()}
        except FileNotFoundError:
            raise ItemError("missing_file", f"{self.path} does not exist") from None

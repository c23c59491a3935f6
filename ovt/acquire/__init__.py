"""The acquire stage: 3D assets from several sources into a content-addressed store with a labelled, split manifest.

Public API:
  run(cfg, *, seed, paths=AcquirePaths())  the stage (ovt.acquire.stage)
  AcquireParams                         its typed params (ovt.acquire.config)
  AssetSource, AssetCandidate           the source interface; build_source(name, cfg) makes one
  parse_properties, parse_catalogue     Sweet Home 3D catalogue reading
  safe_extract, check_member_name       zip safety
  inspect_mesh, head_noun, assign_groups, assign_splits, asset_id
"""

from __future__ import annotations

from ovt.lazy import lazy_exports

_EXPORTS = {
    "AssetCandidate": "ovt.acquire.candidate",
    "AssetSource": "ovt.acquire.candidate",
    "ItemError": "ovt.acquire.candidate",
    "SourceError": "ovt.acquire.candidate",
    "AcquireParams": "ovt.acquire.config",
    "head_noun": "ovt.acquire.labels",
    "parse_properties": "ovt.acquire.properties",
    "check_member_name": "ovt.acquire.safezip",
    "safe_extract": "ovt.acquire.safezip",
    "build_source": "ovt.acquire.sources",
    "parse_catalogue": "ovt.acquire.sources.sweethome3d",
    "assign_groups": "ovt.acquire.split",
    "assign_splits": "ovt.acquire.split",
    "AcquirePaths": "ovt.acquire.stage",
    "run": "ovt.acquire.stage",
    "asset_id": "ovt.acquire.store",
    "inspect_mesh": "ovt.acquire.validate",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

"""The acquire stage: 3D assets from several sources into a content-addressed store with a labelled manifest, split
into train / validation / test by groups of near-duplicates.

Public API:
  run(cfg, *, seed, out_dir)            the stage (ovt.acquire.stage)
  AcquireParams                         its typed params (ovt.acquire.config)
  AssetSource, AssetCandidate           the source interface; build_source(name, cfg) makes one
  parse_properties, parse_catalogue     Sweet Home 3D catalogue reading
  safe_extract, check_member_name       zip safety
  inspect_mesh, head_noun, assign_groups, assign_splits, asset_id
"""

from ovt.acquire.candidate import AssetCandidate, AssetSource, ItemError, SourceError
from ovt.acquire.config import AcquireParams
from ovt.acquire.labels import head_noun
from ovt.acquire.properties import parse_properties
from ovt.acquire.safezip import check_member_name, safe_extract
from ovt.acquire.sources import build_source
from ovt.acquire.sources.sweethome3d import parse_catalogue
from ovt.acquire.split import assign_groups, assign_splits
from ovt.acquire.stage import run
from ovt.acquire.store import asset_id
from ovt.acquire.validate import inspect_mesh

__all__ = [
    "AcquireParams", "AssetCandidate", "AssetSource", "ItemError", "SourceError", "asset_id", "assign_groups",
    "assign_splits",
    "build_source", "check_member_name", "head_noun", "inspect_mesh", "parse_catalogue", "parse_properties", "run",
    "safe_extract",
]

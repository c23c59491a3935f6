"""Asset sources behind one interface (`ovt.acquire.candidate.AssetSource`)."""

from __future__ import annotations

from ovt.acquire.candidate import AssetSource
from ovt.acquire.config import AcquireParams


def build_source(name: str, cfg: AcquireParams) -> AssetSource:
    # Imported lazily: the objaverse and boto3 imports cost seconds and are not needed by the default config.
    if name == "sweethome3d":
        from ovt.acquire.sources.sweethome3d import SweetHome3DSource

        return SweetHome3DSource(cfg.sweethome3d)
    if name == "local":
        from ovt.acquire.sources.local import LocalSource

        return LocalSource(cfg.local)
    if name == "objaverse":
        from ovt.acquire.sources.objaverse_lvis import ObjaverseSource

        return ObjaverseSource(cfg.objaverse)
    raise ValueError(f"unknown asset source {name!r} (allowed: sweethome3d, local, objaverse)")

"""Typed parameters of the render stage (the `render:` block of params.yaml).

The defaults are the embedded default. Why 26 views: a 34-view layout (4 elevation rings x 8 azimuths + poles)
costs a third more views in every downstream stage (captioning, the frozen-feature pass, training). 4 rings x 6
azimuths (60 deg apart) + top + bottom keeps every elevation band of that layout (-35, 10, 30, 60, +-90)
and still gives 6 canonical views per object (the 10 and 30 deg rings at azimuth 0, +-60).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ovt.params_base import StrictModel

# Bump when a code change alters rendered pixels or sample metadata: it is part of every shard's content key.
RENDER_IMPL_VERSION = "render-2"


class Ring(StrictModel):
    """One elevation ring of the `rings` sampler: `n_azimuth` views evenly spaced, starting at `azimuth_offset`."""

    elevation: float = Field(ge=-90, le=90)
    n_azimuth: int = Field(ge=1, le=360)
    azimuth_offset: float = 0.0


class CanonicalRange(StrictModel):
    """A view is canonical (near the natural upright front) when elevation and |azimuth| fall in these ranges."""

    elevation: tuple[float, float] = (0.0, 35.0)
    max_abs_azimuth: float = Field(default=60.0, ge=0, le=180)

    @field_validator("elevation")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"elevation range must be (low, high), got {v}")
        return v


class LightParams(StrictModel):
    """Ambient + one directional key light; per-object seeded jitter of its direction and strength."""

    ambient: float = Field(default=0.35, ge=0, le=2)
    key: float = Field(default=0.65, ge=0, le=4)
    # direction the light comes FROM, in the canonical frame (azimuth 0 = front, +Z), degrees
    azimuth: float = 30.0
    elevation: float = Field(default=45.0, ge=-90, le=90)
    jitter_deg: float = Field(default=20.0, ge=0, le=90)
    intensity_jitter: float = Field(default=0.15, ge=0, lt=1)


class BlenderParams(StrictModel):
    """The `blender` backend: Cycles on CPU, one subprocess per object."""

    # interpreter that has bpy==5.0.1; None -> $OVT_BLENDER_PYTHON, else <repo>/.venv-blender/bin/python
    python: str | None = None
    samples: int = Field(default=16, ge=1, le=4096)
    # CPU threads per Cycles process (0 = all cores)
    threads: int = Field(default=0, ge=0)


class ScratchParams(StrictModel):
    """S3 scratch space for remote fan-out (workers that do not share the stage's disk).

    `url` null: workers read the stage's asset paths and write shards into its output folder directly (a local
    cluster or a shared file system). `url` set (s3://bucket/prefix): the stage uploads each shard's assets there
    (content-addressed, uploaded once), workers render from their own temporary folder and upload the finished
    shard, and the stage downloads it into its output. Credentials come from the standard AWS environment of each
    process; the endpoint from `endpoint_url`, else $AWS_ENDPOINT_URL, else $MLFLOW_S3_ENDPOINT_URL."""

    url: str | None = Field(default=None, pattern=r"^s3://[^/]+(/.*)?$")
    endpoint_url: str | None = None


class ContactSheetParams(StrictModel):
    max_objects: int = Field(default=12, ge=1)
    max_views: int = Field(default=8, ge=1)
    thumb: int = Field(default=96, ge=16, le=512)


class RenderParams(StrictModel):
    backend: Literal["gl", "blender"] = "gl"
    image_size: int = Field(default=224, ge=16, le=4096)
    # RGB background (0..1) composited under the object; ignored when transparent (RGBA PNGs instead)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    transparent: bool = False
    # rings: fixed elevation x azimuth grid (+ poles); fibonacci / hammersley: near-uniform with a seeded offset;
    # uniform: seeded random directions (with hemisphere=upper: the paper-like "random on the upper hemisphere")
    view_sampler: Literal["rings", "fibonacci", "hammersley", "uniform"] = "rings"
    n_views: int = Field(default=26, ge=1, le=10000, description="views per object for non-ring samplers")
    hemisphere: Literal["full", "upper"] = "full"
    rings: tuple[Ring, ...] = (
        Ring(elevation=-35, n_azimuth=6, azimuth_offset=30),
        Ring(elevation=10, n_azimuth=6),
        Ring(elevation=30, n_azimuth=6),
        Ring(elevation=60, n_azimuth=6, azimuth_offset=30),
    )
    poles: bool = True  # rings sampler: add straight-down (top) and straight-up (bottom, full sphere only) views
    distance: tuple[float, float] = (3.0, 3.0)  # camera distance range (object = unit bounding sphere)
    fov_deg: tuple[float, float] = (40.0, 40.0)  # vertical field of view range
    canonical: CanonicalRange = CanonicalRange()
    light: LightParams = LightParams()
    # gl multisampling: 4 gives smooth silhouettes at ~1.7x the render cost; off by default for throughput
    msaa: Literal[0, 2, 4, 8] = 0
    png_compress_level: int = Field(default=1, ge=0, le=9)  # zlib level: 1 is ~3x faster than 6, ~15% bigger
    objects_per_shard: int = Field(default=16, ge=1)
    # an object whose mean foreground fraction over its views is below this is "empty" -> failure
    min_foreground: float = Field(default=0.002, ge=0, lt=1)
    # --- execution only (not part of the content key) ---
    workers: int = Field(default=2, ge=1)
    object_timeout_s: float = Field(default=120.0, gt=0)
    limit: int | None = Field(default=None, ge=1, description="render only the first N assets (debugging)")
    # how the stage fans its shards out: `processes` (one long-lived render worker process per lane on this machine)
    # or `dask` (one task per shard on a dask.distributed cluster: the scheduler at `cluster_address`, or a local
    # cluster of `workers` processes when it is null)
    executor: Literal["processes", "dask"] = "processes"
    cluster_address: str | None = None
    # dask workers without the stage's disk: assets travel to them and shards back through this S3 prefix
    scratch: ScratchParams = ScratchParams()
    blender: BlenderParams = BlenderParams()
    contact_sheet: ContactSheetParams = ContactSheetParams()

    @field_validator("distance", "fov_deg")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1] or v[0] <= 0:
            raise ValueError(f"must be a positive (min, max) range, got {v}")
        return v

    @field_validator("fov_deg")
    @classmethod
    def _fov(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[1] >= 170:
            raise ValueError(f"field of view must be < 170 degrees, got {v}")
        return v

    @field_validator("background")
    @classmethod
    def _rgb(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0 <= c <= 1 for c in v):
            raise ValueError(f"background colour components must be in [0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _fits(self) -> RenderParams:
        # The object is scaled into the unit sphere; at the nearest distance and narrowest FOV it must still fit,
        # or views get cropped silently.
        import math

        if self.distance[0] * math.sin(math.radians(self.fov_deg[0]) / 2) < 1.0:
            raise ValueError(
                f"distance[0]={self.distance[0]} with fov_deg[0]={self.fov_deg[0]} crops the unit-sphere object: "
                f"need distance[0] >= 1/sin(fov/2) = {1 / math.sin(math.radians(self.fov_deg[0]) / 2):.3f}"
            )
        if self.view_sampler == "rings" and not self.rings and not self.poles:
            raise ValueError("view_sampler=rings needs at least one ring or poles=true")
        return self

    def output_fields(self) -> dict:
        """The params that determine rendered bytes (part of the shard content key); execution knobs are not."""
        d = self.model_dump(mode="json")
        for k in ("workers", "object_timeout_s", "limit", "contact_sheet", "executor", "cluster_address", "scratch"):
            d.pop(k)
        d["blender"] = {"samples": self.blender.samples} if self.backend == "blender" else None
        return d


def default_blender_python(cfg: BlenderParams, repo_root: Path | None = None) -> Path:
    """Resolve the bpy interpreter: params, then $OVT_BLENDER_PYTHON, then <repo>/.venv-blender/bin/python."""
    if cfg.python:
        return Path(cfg.python)
    env = os.environ.get("OVT_BLENDER_PYTHON")
    if env:
        return Path(env)
    root = repo_root or Path(__file__).resolve().parents[2]
    return root / ".venv-blender" / "bin" / "python"

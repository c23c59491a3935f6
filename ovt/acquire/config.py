"""Typed parameters of the acquire stage (the `acquire:` block of params.yaml).

The defaults are the embedded default: every Sweet Home 3D furniture library from the Debian package, with the label
rules (merges, drops, a minimum class size) that turn its catalogue names into a usable label space.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ovt.params_base import StrictModel

SourceName = Literal["sweethome3d", "local", "objaverse"]

# Where the .sh3f libraries live: the Debian package location first, then the project's state folder, where the
# setup unpacks the package with `apt-get download` + `dpkg-deb -x` when it cannot install as root.
DEFAULT_SH3F_PATHS = (
    "/usr/share/sweethome3d/furniture",
    ".state/debs/sweethome3d-furniture/usr/share/sweethome3d/furniture",
)


class SweetHome3DParams(StrictModel):
    search_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_SH3F_PATHS), min_length=1)
    # Library file stems to use (e.g. ["Scopia"]); empty = every .sh3f found. First search path wins on a name clash.
    libraries: list[str] = Field(default_factory=list)
    # Zip-bomb guards: uncompressed bytes one asset, and one whole library, may expand to.
    max_asset_bytes: int = Field(default=256 * 2**20, gt=0)
    max_library_bytes: int = Field(default=4 * 2**30, gt=0)


class LocalParams(StrictModel):
    # A folder or an `s3://bucket/prefix`; the CSV rows' `path` values are relative to it.
    root: str | None = None
    # CSV with a header row `path,category[,name]`; relative to `root` unless absolute.
    csv: str = "assets.csv"
    licence: str | None = None
    creator: str | None = None
    # S3 endpoint for an s3:// root; None = boto3's own resolution (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS).
    s3_endpoint_url: str | None = None
    max_asset_bytes: int = Field(default=256 * 2**20, gt=0)


class ObjaverseParams(StrictModel):
    # Objaverse-LVIS category names (e.g. "chair", "coffee_mug"); each becomes the label hint of its objects.
    lvis_categories: list[str] = Field(default_factory=list)
    max_per_category: int = Field(default=20, gt=0)
    download_processes: int = Field(default=1, gt=0)


class FilterParams(StrictModel):
    # Staircases (2 items) are building parts, metres tall, and not objects one recognises from a viewpoint.
    # Doors and windows and Characters are kept: they are free-standing, recognisable models and give the door,
    # window, female and male classes of the reference 23-class benchmark.
    drop_categories: list[str] = Field(default_factory=lambda: ["Staircases"])
    min_faces: int = Field(default=4, ge=1)
    max_faces: int = Field(default=250_000, ge=1)
    include_names: list[str] = Field(default_factory=list, description="regexes; if any, a name must match one")
    exclude_names: list[str] = Field(default_factory=list, description="regexes; a name matching one is dropped")
    max_assets: int | None = Field(default=None, gt=0, description="keep the first N usable assets in hash order")

    @field_validator("include_names", "exclude_names")
    @classmethod
    def _regexes_compile(cls, v: list[str]) -> list[str]:
        for pat in v:
            try:
                re.compile(pat)
            except re.error as err:
                raise ValueError(f"invalid regex {pat!r}: {err}") from None
        return v

    @model_validator(mode="after")
    def _face_range(self) -> FilterParams:
        if self.min_faces > self.max_faces:
            raise ValueError(f"min_faces ({self.min_faces}) > max_faces ({self.max_faces})")
        return self


class LabelParams(StrictModel):
    # Head nouns that name the same class; applied after lower-casing (and to objaverse LVIS hints).
    merges: dict[str, str] = Field(
        default_factory=lambda: {
            "couch": "sofa",
            "light": "lamp",
            "panes": "window",
            "shelves": "bookcase",
        }
    )
    # Heads that are not object classes ("Kitchen unit", "Wine glass" vs "Glass door", "Parking slot").
    drop: list[str] = Field(default_factory=lambda: ["unit", "glass", "slot"])
    min_per_class: int = Field(default=6, ge=1)


# Typed functions rather than lambdas: mypy cannot infer a lambda's list of literals against pydantic's
# default_factory overloads.
def _default_group_by() -> list[Literal["geometry", "name_family"]]:
    return ["geometry", "name_family"]


def _default_sources() -> list[SourceName]:
    return ["sweethome3d"]


class SplitParams(StrictModel):
    """Train / validation / test by group of near-duplicates, stratified by label (ovt.acquire.split)."""

    validation_fraction: float = Field(default=0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    # What joins objects into one group that is never split: equal geometry fingerprints, equal name families.
    group_by: list[Literal["geometry", "name_family"]] = Field(default_factory=_default_group_by)
    # A name family larger than this is refined (by the numbers in the stem) or, if it cannot be, ignored.
    max_family_size: int = Field(default=10, ge=2)

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"validation_fraction + test_fraction = "
                f"{self.validation_fraction + self.test_fraction} leaves no training objects (need < 1)"
            )
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError(f"group_by lists an entry twice: {self.group_by}")
        return self


class AcquireParams(StrictModel):
    # Sources in priority order: when two sources hold the same bytes the first one's metadata is kept.
    sources: list[SourceName] = Field(default_factory=_default_sources, min_length=1)
    sweethome3d: SweetHome3DParams = Field(default_factory=SweetHome3DParams)
    local: LocalParams = Field(default_factory=LocalParams)
    objaverse: ObjaverseParams = Field(default_factory=ObjaverseParams)
    filters: FilterParams = Field(default_factory=FilterParams)
    labels: LabelParams = Field(default_factory=LabelParams)
    split: SplitParams = Field(default_factory=SplitParams)
    # processes that parse meshes (0: one per CPU); the manifest does not depend on it
    workers: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _sources_configured(self) -> AcquireParams:
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources lists a source twice: {self.sources}")
        if "local" in self.sources and not self.local.root:
            raise ValueError("source 'local' is enabled but local.root is not set (a folder or s3://bucket/prefix)")
        if "objaverse" in self.sources and not self.objaverse.lvis_categories:
            raise ValueError("source 'objaverse' is enabled but objaverse.lvis_categories is empty")
        return self

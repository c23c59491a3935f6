"""Sweet Home 3D furniture libraries (`.sh3f`, a zip): the embedded default source.

A library holds `PluginFurnitureCatalog.properties` (English names; item keys `name#N`, `category#N`, `model#N`, ...)
and one folder per model with OBJ + MTL + textures. `multiPartModel#N=true` means the model is that whole folder;
otherwise it is the single file `model#N`. Licence texts in the folder are kept as attribution, outside the asset id.
"""

from __future__ import annotations

import functools
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from ovt.acquire.candidate import AssetCandidate, ItemError, SourceError
from ovt.acquire.config import SweetHome3DParams
from ovt.acquire.properties import parse_properties
from ovt.acquire.safezip import Budget, check_member_name, is_symlink, read_member

log = logging.getLogger(__name__)

CATALOGUE = "PluginFurnitureCatalog.properties"
INSTALL_HINT = (
    "install the Debian package: `sudo apt-get install -y sweethome3d-furniture`, or without root: "
    "`apt-get download sweethome3d-furniture && dpkg-deb -x sweethome3d-furniture_*.deb "
    ".state/debs/sweethome3d-furniture` (then .state/debs/sweethome3d-furniture/usr/share/sweethome3d/furniture "
    "must be in acquire.sweethome3d.search_paths)"
)
_ATTRIBUTION_SUFFIXES = (".txt", ".html", ".htm")
_MAX_CATALOGUE = 64 * 2**20


@dataclass(frozen=True)
class CatalogueItem:
    index: int
    id: str | None
    name: str
    category: str
    tags: tuple[str, ...]
    creator: str | None
    licence: str | None
    model: str  # member name of the model inside the zip (leading "/" removed)
    multi_part: bool
    dims_cm: dict[str, float] | None
    rotation: tuple[tuple[float, ...], ...] | None
    door_or_window: bool


def _floats(text: str, n: int, key: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split()]
    except ValueError:
        raise ItemError("bad_catalogue", f"{key}={text!r} is not {n} numbers") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise ItemError("bad_catalogue", f"{key}={text!r} is not {n} finite numbers")
    return vals


def _check_rotation(rows: tuple[tuple[float, ...], ...], key: str) -> None:
    """modelRotation must be a rotation (orthonormal, det +1): a scale or mirror would distort or flip the model."""
    for i in range(3):
        for j in range(3):
            dot = sum(rows[i][k] * rows[j][k] for k in range(3))
            if abs(dot - (1.0 if i == j else 0.0)) > 1e-3:
                raise ItemError("bad_catalogue", f"{key} is not orthonormal: {rows}")
    (a, b, c), (d, e, f), (g, h, i_) = rows
    if a * (e * i_ - f * h) - b * (d * i_ - f * g) + c * (d * h - e * g) < 0:
        raise ItemError("bad_catalogue", f"{key} is a reflection (det < 0): {rows}")


def parse_catalogue(props: dict[str, str]) -> tuple[dict[str, str], list[CatalogueItem | ItemError]]:
    """Split catalogue properties into library-level keys and items (ItemError for a malformed item)."""
    library = {k: v for k, v in props.items() if "#" not in k}
    indices = sorted({int(k.split("#", 1)[1]) for k in props if k.startswith("name#") and k.split("#", 1)[1].isdigit()})
    items: list[CatalogueItem | ItemError] = []
    for i in indices:

        def get(key: str, default: str | None = None) -> str | None:
            return props.get(f"{key}#{i}", default)

        try:
            model = get("model")
            if not model:
                raise ItemError("bad_catalogue", f"item {i} has no model#{i}")
            # Catalogue model paths are rooted at the zip ("/scopia/x/x.obj"); one leading "/" means "zip root".
            model_member = str(check_member_name(model[1:] if model.startswith("/") else model))
            dims = None
            width, depth, height = get("width"), get("depth"), get("height")
            if width and depth and height:
                dims = {
                    "width": _floats(width, 1, f"width#{i}")[0],
                    "depth": _floats(depth, 1, f"depth#{i}")[0],
                    "height": _floats(height, 1, f"height#{i}")[0],
                }
            rot = None
            rotation = get("modelRotation")
            if rotation:
                v = _floats(rotation, 9, f"modelRotation#{i}")
                rot = (tuple(v[0:3]), tuple(v[3:6]), tuple(v[6:9]))
                _check_rotation(rot, f"modelRotation#{i}")
            items.append(
                CatalogueItem(
                    index=i,
                    id=get("id"),
                    name=(get("name") or "").strip(),
                    category=(get("category") or "").strip(),
                    tags=tuple(t.strip() for t in (get("tags") or "").split(",") if t.strip()),
                    creator=get("creator"),
                    licence=get("license") or library.get("license"),
                    model=model_member,
                    multi_part=((get("multiPartModel") or "false").strip().lower() == "true"),
                    dims_cm=dims,
                    rotation=rot,
                    door_or_window=((get("doorOrWindow") or "false").strip().lower() == "true"),
                )
            )
        except ItemError as err:
            err.item = f"#{i} {get('name', '')}".strip()
            items.append(err)
    return library, items


def find_libraries(search_paths: list[str], names: list[str]) -> list[Path]:
    """The .sh3f files to use: by file stem, first search path wins; SourceError with install help if none."""
    found: dict[str, Path] = {}
    for d in search_paths:
        p = Path(d)
        if p.is_dir():
            for f in sorted(p.glob("*.sh3f")):
                found.setdefault(f.stem, f)
    if not found:
        raise SourceError(f"no Sweet Home 3D furniture library (*.sh3f) in {search_paths}: {INSTALL_HINT}")
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise SourceError(f"acquire.sweethome3d.libraries: {missing} not found (available: {sorted(found)})")
        return [found[n] for n in names]
    return [found[k] for k in sorted(found)]


class SweetHome3DSource:
    name = "sweethome3d"

    def __init__(self, cfg: SweetHome3DParams):
        self.cfg = cfg

    def candidates(self) -> Iterator[AssetCandidate | ItemError]:
        for lib in find_libraries(self.cfg.search_paths, self.cfg.libraries):
            yield from self._library(lib)

    def _library(self, path: Path) -> Iterator[AssetCandidate | ItemError]:
        try:
            with zipfile.ZipFile(path) as zf:
                # The catalogue is bounded too: a crafted library could make it the bomb.
                props = parse_properties(read_member(zf, zf.getinfo(CATALOGUE), Budget(_MAX_CATALOGUE, CATALOGUE)))
                members = zf.infolist()
        except (zipfile.BadZipFile, KeyError, OSError, ValueError, ItemError) as err:
            raise SourceError(f"{path}: not a readable furniture library ({err})") from err
        library, items = parse_catalogue(props)
        # One budget per library per run: the whole archive can expand to at most max_library_bytes.
        lib_budget = Budget(self.cfg.max_library_bytes, f"library {path.name}")
        for it in items:
            if isinstance(it, ItemError):
                it.item = f"{self.name}:{path.stem}:{it.item}"
                yield it
                continue
            yield AssetCandidate(
                source=self.name,
                source_ref=f"{path.stem}:{it.model}",
                name=it.name,
                category=it.category,
                mesh=PurePosixPath(it.model).name,
                tags=it.tags,
                licence=it.licence,
                creator=it.creator,
                rotation=it.rotation,
                dims_cm=it.dims_cm,
                load_files=_Loader(path, it, members, self.cfg.max_asset_bytes, lib_budget),
                attribution=frozenset(
                    m for m in _folder_files(it, members) if m.lower().endswith(_ATTRIBUTION_SUFFIXES)
                ),
            )


def _folder_files(item: CatalogueItem, members: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """Relative name -> member for the files of one model (its folder when multi-part, else the model alone)."""
    if not item.multi_part:
        return {PurePosixPath(item.model).name: m for m in members if m.filename == item.model}
    prefix = str(PurePosixPath(item.model).parent) + "/"
    return {
        m.filename[len(prefix) :]: m for m in members if m.filename.startswith(prefix) and not m.filename.endswith("/")
    }


class _Loader:
    """Reads one model's files from its library on demand (a picklable callable, not a closure over a zip)."""

    def __init__(
        self, path: Path, item: CatalogueItem, members: list[zipfile.ZipInfo], max_bytes: int, lib_budget: Budget
    ):
        self.path, self.item, self.members, self.max_bytes, self.lib_budget = path, item, members, max_bytes, lib_budget

    def __call__(self) -> dict[str, bytes]:
        files = _folder_files(self.item, self.members)
        mesh = PurePosixPath(self.item.model).name
        if mesh not in files:
            raise ItemError("missing_file", f"model {self.item.model!r} is not in {self.path.name}")
        budget = Budget(self.max_bytes, f"asset {self.item.model!r}")
        out: dict[str, bytes] = {}
        zf = _open_library(self.path)
        for rel, info in sorted(files.items()):
            check_member_name(rel)  # the part below the model folder must be safe on its own too
            if is_symlink(info):
                raise ItemError("unsafe_path", f"symlink member {info.filename!r}")
            out[rel] = read_member(zf, info, budget, self.lib_budget)
        return out


def _open_library(path: Path) -> zipfile.ZipFile:
    """The library's zip, opened once per process: a library holds hundreds of models, and opening it re-reads its
    whole central directory (most of a small model's load time). Keyed by size and mtime, so a replaced file is
    opened afresh."""
    st = path.stat()
    return _open_zip(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _open_zip(path: str, size: int, mtime_ns: int) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)

"""Mesh validation with trimesh: is this asset something the renderer can draw?

Two passes. `first_pass(name, data)` reads only the header (PLY, binary STL, OFF) or streams the lines (OBJ, ASCII
STL) to count the faces the file declares, so that a 2-million-face mesh is refused in milliseconds instead of after a
full parse, and garbage is named as such. `inspect_mesh(path)` then loads the file as a scene (unprocessed, so
non-finite coordinates are seen rather than silently dropped) and counts what will be rendered.

Failure reasons (one failures.jsonl line each, never an exception out of these functions other than ItemError):
  unparseable   not a file of its format (garbage bytes, a broken header), or trimesh cannot parse it
  no_faces      parsed, but no triangle geometry (an empty OBJ, only points or lines)
  nan_vertices  a vertex with a NaN or infinite coordinate
  degenerate    zero total area or a zero-size bounding box
  too_many_faces / too_few_faces   outside the `filters` face range: from the declared count before any load when
                the format has one (OBJ `f` lines are a lower bound of the triangles), else from the loaded counts
"""

from __future__ import annotations

import logging
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovt.acquire.candidate import ItemError

log = logging.getLogger(__name__)

# Bump when the checks or the recorded statistics change: cached rows of an older version are re-inspected.
VALIDATOR_VERSION = "trimesh-scene-2"

_OBJ_NONFINITE = re.compile(rb"(?m)^[ \t]*v[ \t][^\n]*?(?i:nan|inf)")
_OBJ_KEYWORDS = re.compile(rb"(?m)^[ \t]*(v|vt|vn|vp|f|l|p|o|g|s|mtllib|usemtl)[ \t]")


@dataclass(frozen=True)
class MeshInfo:
    n_vertices: int
    n_faces: int
    textured: bool
    extents: tuple[float, float, float] = (0.0, 0.0, 0.0)  # world-space bounding-box size of the raw mesh


def _count_lines(data: bytes, keyword: bytes) -> int:
    """Lines starting with `keyword` + blank, counted without splitting the file into lines."""
    n = 0
    for sep in (b" ", b"\t"):
        n += data.count(b"\n" + keyword + sep) + data.startswith(keyword + sep)
    return n


def _obj(data: bytes) -> int:
    if b"\x00" in data[: 1 << 16]:
        raise ItemError("unparseable", "binary bytes in an OBJ (a text format)")
    n_faces = _count_lines(data, b"f")
    low = data.lower()  # a plain substring scan first: the line regex is slow on 100 MB files
    if (b"nan" in low or b"inf" in low) and _OBJ_NONFINITE.search(data):
        raise ItemError("nan_vertices", "a vertex line has a NaN/inf coordinate")
    if n_faces == 0:
        content = [ln for ln in data.splitlines()[:1000] if ln.strip() and not ln.lstrip().startswith(b"#")]
        if content and not _OBJ_KEYWORDS.search(data):
            raise ItemError("unparseable", "no OBJ statement (v, f, o, g, mtllib, ...) in the file")
        raise ItemError("no_faces", "no face (`f`) lines")
    return n_faces


def _ply(data: bytes) -> int:
    end = data.find(b"end_header", 0, 1 << 16)
    if not data.startswith(b"ply") or end < 0:
        raise ItemError("unparseable", "not a PLY file (no `ply` ... `end_header` header)")
    for line in data[:end].decode("ascii", errors="replace").splitlines():
        toks = line.split()
        if len(toks) == 3 and toks[0] == "element" and toks[1] == "face":
            if not toks[2].isdigit():
                raise ItemError("unparseable", f"PLY header: bad face count {toks[2]!r}")
            if int(toks[2]) == 0:
                raise ItemError("no_faces", "PLY header declares 0 faces")
            return int(toks[2])
    raise ItemError("no_faces", "PLY header declares no face element")


def _stl(data: bytes) -> int:
    if len(data) >= 84:
        n = struct.unpack("<I", data[80:84])[0]
        if len(data) == 84 + 50 * n:
            if n == 0:
                raise ItemError("no_faces", "binary STL with 0 triangles")
            return n
    if data.lstrip()[:5].lower() == b"solid":
        n = data.count(b"endfacet")
        if n == 0:
            raise ItemError("no_faces", "ASCII STL without facets")
        return n
    raise ItemError("unparseable", "neither a binary STL (size != 84 + 50 * count) nor an ASCII one")


def _off(data: bytes) -> int:
    toks = [t for line in data[: 1 << 12].split(b"\n") if not line.lstrip().startswith(b"#") for t in line.split()]
    if not toks or not toks[0].endswith(b"OFF"):
        raise ItemError("unparseable", "not an OFF file (no OFF header)")
    counts = toks[1:4]
    if len(counts) < 2 or not all(t.isdigit() for t in counts[:2]):
        raise ItemError("unparseable", "OFF header without vertex/face counts")
    if int(counts[1]) == 0:
        raise ItemError("no_faces", "OFF header declares 0 faces")
    return int(counts[1])


_FIRST_PASS = {".obj": _obj, ".ply": _ply, ".stl": _stl, ".off": _off}


def first_pass(name: str, data: bytes) -> int | None:
    """Faces the file declares (a lower bound of its triangles), None for formats without a cheap count (glTF,
    GLB, Collada); raise ItemError(unparseable | no_faces | nan_vertices) when the header or lines already say so."""
    check = _FIRST_PASS.get(Path(name).suffix.lower())
    return check(data) if check else None


def check_declared(name: str, data: bytes, max_faces: int) -> None:
    """Refuse from the first pass alone, before the mesh is written anywhere or parsed."""
    n = first_pass(name, data)
    if n is not None and n > max_faces:
        raise ItemError("too_many_faces", f"{n} faces declared > max_faces {max_faces} (not loaded)")


def _has_texture(geom) -> bool:
    visual = getattr(geom, "visual", None)
    if visual is None or getattr(visual, "kind", None) != "texture":
        return False
    mat = getattr(visual, "material", None)
    image = getattr(mat, "image", None)
    if image is None:  # PBR materials (glTF) keep it under baseColorTexture
        image = getattr(mat, "baseColorTexture", None)
    return image is not None and getattr(visual, "uv", None) is not None


def inspect_mesh(path: str | Path) -> MeshInfo:
    """Load `path` as a scene and count what will be rendered; raise ItemError with the reason if unusable."""
    import trimesh  # heavy import, only needed when a mesh is actually inspected

    path = Path(path)
    try:
        first_pass(path.name, path.read_bytes())
    except OSError as err:
        raise ItemError("unparseable", f"cannot read {path.name}: {err}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scene = trimesh.load_scene(str(path), process=False)
    except Exception as err:  # trimesh raises many types for bad input; all mean "cannot parse this file"
        raise ItemError("unparseable", f"{type(err).__name__}: {err}"[:500]) from None

    n_vertices = n_faces = 0
    area = 0.0
    textured = False
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for node in scene.graph.nodes_geometry:
        transform, gname = scene.graph[node]
        geom = scene.geometry.get(gname)
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue
        verts = np.asarray(geom.vertices, dtype=np.float64)
        if not np.isfinite(verts).all():
            raise ItemError("nan_vertices", f"non-finite vertex coordinates in {gname!r}")
        n_vertices += len(verts)
        n_faces += len(geom.faces)
        area += float(geom.area)
        textured = textured or _has_texture(geom)
        used = verts[np.unique(geom.faces)]
        world = trimesh.transform_points(used, transform)
        lo = np.minimum(lo, world.min(axis=0))
        hi = np.maximum(hi, world.max(axis=0))

    if n_faces == 0:
        raise ItemError("no_faces", "no triangle faces")
    extent = hi - lo
    if not np.isfinite(area) or area <= 0.0 or not (extent > 0).any():
        raise ItemError("degenerate", f"area={area:.3g}, extents={np.round(extent, 6).tolist()}")
    return MeshInfo(
        n_vertices=n_vertices,
        n_faces=n_faces,
        textured=textured,
        extents=(float(extent[0]), float(extent[1]), float(extent[2])),
    )


def check_limits(info: MeshInfo, min_faces: int, max_faces: int) -> None:
    if info.n_faces > max_faces:
        raise ItemError("too_many_faces", f"{info.n_faces} faces > max_faces {max_faces}")
    if info.n_faces < min_faces:
        raise ItemError("too_few_faces", f"{info.n_faces} faces < min_faces {min_faces}")

"""Mesh validation with trimesh: is this asset something the renderer can draw?

Failure reasons (one failures.jsonl line each, never an exception out of `inspect_mesh`):
  unreadable  trimesh cannot parse the file (garbage bytes, unknown format, broken references)
  empty       no triangle geometry at all (an empty OBJ, only points or lines)
  degenerate  non-finite coordinates, zero total area, or a zero-size bounding box
  too_many_faces / too_few_faces   outside the `filters` face range (checked by `check_limits`, from the counts,
              so changing the range does not require re-reading the mesh)
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovt.acquire.candidate import ItemError

log = logging.getLogger(__name__)

# Bump when the checks or the recorded statistics change: cached rows of an older version are re-inspected.
VALIDATOR_VERSION = "trimesh-scene-1"


@dataclass(frozen=True)
class MeshInfo:
    n_vertices: int
    n_faces: int
    textured: bool


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

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scene = trimesh.load_scene(str(path))
    except Exception as err:  # trimesh raises many types for bad input; all mean "cannot read this file"
        raise ItemError("unreadable", f"{type(err).__name__}: {err}"[:500]) from None

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
            raise ItemError("degenerate", f"non-finite vertex coordinates in {gname!r}")
        n_vertices += len(verts)
        n_faces += len(geom.faces)
        area += float(geom.area)
        textured = textured or _has_texture(geom)
        world = trimesh.transform_points(verts, transform)
        lo = np.minimum(lo, world.min(axis=0))
        hi = np.maximum(hi, world.max(axis=0))

    if n_faces == 0:
        raise ItemError("empty", "no triangle faces")
    extent = hi - lo
    if not np.isfinite(area) or area <= 0.0 or not (extent > 0).any():
        raise ItemError("degenerate", f"area={area:.3g}, extents={np.round(extent, 6).tolist()}")
    return MeshInfo(n_vertices=n_vertices, n_faces=n_faces, textured=textured)


def check_limits(info: MeshInfo, min_faces: int, max_faces: int) -> None:
    if info.n_faces > max_faces:
        raise ItemError("too_many_faces", f"{info.n_faces} faces > max_faces {max_faces}")
    if info.n_faces < min_faces:
        raise ItemError("too_few_faces", f"{info.n_faces} faces < min_faces {min_faces}")

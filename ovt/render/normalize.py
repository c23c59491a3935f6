"""Mesh loading and normalisation into the canonical render frame.

rotation (from the acquire manifest, maps the raw mesh into Y-up/front-+Z) -> centre the bounding box at the
origin -> scale so the farthest vertex lies on the unit sphere. Textures (map_Kd) and material colours (Kd) are
kept per part so the renderers can draw them.

This module deliberately imports only numpy and trimesh: the blender backend's worker runs it inside the separate
bpy interpreter (numpy 1.26) to compute exactly the same normalisation matrix as the gl backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, cast

import numpy as np
import trimesh

_CREASE_COS = float(np.cos(np.radians(45.0)))


class MeshError(ValueError):
    """The asset cannot be turned into something renderable (unreadable, no faces, zero size)."""


@dataclass
class Part:
    """One drawable piece: triangle soup (3 corners per face) with one material."""

    positions: np.ndarray  # (3F, 3) float32, normalised frame
    normals: np.ndarray  # (3F, 3) float32, unit
    uvs: np.ndarray | None  # (3F, 2) float32, OpenGL convention (v up), or None
    colors: np.ndarray  # (3F, 4) float32 in [0, 1]: Kd / vertex colours (multiplied with the texture if any)
    texture: np.ndarray | None  # (H, W, 4) uint8, rows top-to-bottom as stored in the image file


@dataclass
class NormalisedMesh:
    parts: list[Part]
    matrix: np.ndarray  # 4x4: raw mesh coordinates -> normalised frame (rotation, centring, scaling)
    radius: float  # bounding-sphere radius in raw units (after rotation)
    n_faces: int


def rotation_matrix(rotation: Sequence[Sequence[float]] | Sequence[float] | None) -> np.ndarray:
    """The manifest's `rotation` (3x3 row-major, nested or flat, or null) as a 3x3 array."""
    if rotation is None:
        return np.eye(3)
    r = np.asarray(rotation, dtype=float)
    if r.size != 9 or not np.all(np.isfinite(r)):
        raise MeshError(f"rotation must be 9 finite numbers (3x3 row-major), got {rotation!r}")
    r = r.reshape(3, 3)
    if abs(np.linalg.det(r)) < 1e-6:
        raise MeshError(f"rotation is singular: {rotation!r}")
    return r


def load_scene(path: str | Path) -> trimesh.Scene:
    path = Path(path)
    if not path.is_file() and not path.exists():
        raise MeshError(f"mesh file not found: {path}")
    try:
        # open the file ourselves (trimesh refuses anything but regular files by path) and resolve MTL/texture
        # references relative to the mesh's folder, as trimesh does for a path
        with open(path, "rb") as fh:
            scene = trimesh.load(
                fh,
                file_type=path.suffix.lstrip(".").lower(),
                force="scene",
                resolver=trimesh.resolvers.FilePathResolver(str(path)),
            )
    except Exception as e:  # trimesh raises many types on bad files; the caller only needs "unreadable"
        raise MeshError(f"cannot load mesh {path.name}: {type(e).__name__}: {e}") from e
    return cast(trimesh.Scene, scene)  # force="scene" always loads a Scene; trimesh.load is typed Geometry


def _meshes(scene: trimesh.Scene) -> list[trimesh.Trimesh]:
    return [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]


def normalisation_matrix(vertices: np.ndarray, rotation: np.ndarray) -> tuple[np.ndarray, float]:
    """4x4 mapping raw vertices to the unit bounding sphere: scale(1/r) . translate(-centre) . rotate."""
    v = vertices @ rotation.T
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(v - centre, axis=1).max())
    if not np.isfinite(radius) or radius <= 1e-12:
        raise MeshError(f"mesh has zero size (bounding radius {radius})")
    m = np.eye(4)
    m[:3, :3] = rotation / radius
    m[:3, 3] = -centre / radius
    return m, radius


def _texture_of(material) -> np.ndarray | None:
    image = getattr(material, "image", None)
    if image is None and hasattr(material, "baseColorTexture"):
        image = material.baseColorTexture
    if image is None:
        return None
    return np.asarray(image.convert("RGBA"), dtype=np.uint8)


def _base_color(visual) -> np.ndarray:
    mat = getattr(visual, "material", None)
    if mat is None:
        return np.array([0.8, 0.8, 0.8, 1.0])
    if hasattr(mat, "baseColorFactor") and mat.baseColorFactor is not None:
        c = np.asarray(mat.baseColorFactor, dtype=float)
    elif getattr(mat, "diffuse", None) is not None:
        c = np.asarray(mat.diffuse, dtype=float)
    else:
        return np.array([0.8, 0.8, 0.8, 1.0])
    return c / 255.0 if c.max() > 1.0 else c


def _part(mesh: trimesh.Trimesh, m: np.ndarray) -> Part:
    faces = mesh.faces
    n_corner = faces.size
    pos = mesh.vertices[faces].reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    # Crease-angle shading: OBJs without `vn` get vertex normals averaged over shared vertices, which rounds off
    # every box edge; where a corner's averaged normal strays > 45 deg from its face normal use the face normal.
    fn = np.repeat(mesh.face_normals[:, None, :], 3, axis=1)
    vn = mesh.vertex_normals[faces]
    smooth = (fn * vn).sum(axis=-1, keepdims=True) > _CREASE_COS
    nrm = np.where(smooth, vn, fn).reshape(-1, 3)
    # normals transform with the inverse transpose (rotation may not be exactly orthonormal)
    nrm = nrm @ np.linalg.inv(m[:3, :3]).T
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    visual = mesh.visual
    uvs, texture = None, None
    colors = np.tile(np.array([0.8, 0.8, 0.8, 1.0]), (n_corner, 1))
    if isinstance(visual, trimesh.visual.TextureVisuals):
        texture = _texture_of(visual.material) if visual.material is not None else None
        if texture is not None and visual.uv is not None and len(visual.uv) == len(mesh.vertices):
            uvs = np.asarray(visual.uv, dtype=float)[faces].reshape(-1, 2)
            # like Blender's OBJ importer, a texture replaces Kd rather than being tinted by it
            colors[:] = 1.0
        else:
            texture = None
            colors[:] = _base_color(visual)
    elif isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind is not None:
        colors = visual.vertex_colors[faces].reshape(-1, 4) / 255.0
    return Part(
        positions=pos.astype(np.float32),
        normals=nrm.astype(np.float32),
        uvs=None if uvs is None else uvs.astype(np.float32),
        colors=colors.astype(np.float32),
        texture=texture,
    )


def load_normalised(path: str | Path, rotation=None) -> NormalisedMesh:
    """Load a mesh file and return its parts in the normalised frame (unit bounding sphere at the origin)."""
    rot = rotation_matrix(rotation)
    meshes = _meshes(load_scene(path))
    if not meshes:
        raise MeshError(f"mesh {Path(path).name} has no triangles")
    # only vertices used by faces define the bounds (stray points would shrink the object)
    verts = np.concatenate([mh.vertices[np.unique(mh.faces)] for mh in meshes])
    m, radius = normalisation_matrix(verts, rot)
    parts = [_part(mh, m) for mh in meshes]
    return NormalisedMesh(parts=parts, matrix=m, radius=radius, n_faces=int(sum(len(mh.faces) for mh in meshes)))

"""Tiny on-disk assets for the render tests: real OBJ+MTL(+PNG) files and an acquire-style manifest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image


def _cube(centre, half) -> tuple[np.ndarray, np.ndarray]:
    m = trimesh.creation.box(extents=np.full(3, 2 * half))
    return m.vertices + np.asarray(centre), m.faces


def write_marker_obj(folder: Path, marker_axis: int = 2, offset=(5.0, -2.0, 1.0), scale: float = 40.0) -> Path:
    """A grey cube with a red plate on its +axis face, translated and scaled far from the unit sphere.

    With marker_axis=2 the red plate is on the front (+Z): azimuth 0 must see it, azimuth 180 must not.
    """
    folder.mkdir(parents=True, exist_ok=True)
    body_v, body_f = _cube((0, 0, 0), 0.5)
    c = np.zeros(3)
    c[marker_axis] = 0.55
    half = np.full(3, 0.3)
    half[marker_axis] = 0.05
    mk = trimesh.creation.box(extents=2 * half)
    mark_v, mark_f = mk.vertices + c, mk.faces
    lines = ["mtllib m.mtl"]
    for v in np.vstack([body_v, mark_v]) * scale + np.asarray(offset):
        lines.append(f"v {v[0]:.6f} {v[1]:.6f} {v[2]:.6f}")
    lines.append("usemtl grey")
    lines += [f"f {a + 1} {b + 1} {d + 1}" for a, b, d in body_f]
    lines.append("usemtl red")
    n = len(body_v)
    lines += [f"f {a + 1 + n} {b + 1 + n} {d + 1 + n}" for a, b, d in mark_f]
    (folder / "marker.obj").write_text("\n".join(lines) + "\n")
    (folder / "m.mtl").write_text("newmtl grey\nKd 0.6 0.6 0.6\n\nnewmtl red\nKd 1.0 0.0 0.0\n")
    return folder / "marker.obj"


def write_textured_box(folder: Path, colour=(0, 200, 0), tex_size: int = 8) -> Path:
    """A unit box with UVs and a solid-colour PNG texture (OBJ + MTL + PNG, as trimesh exports them)."""
    folder.mkdir(parents=True, exist_ok=True)
    m = trimesh.creation.box(extents=(1.0, 0.6, 0.8))
    m.unmerge_vertices()
    img = Image.fromarray(np.full((tex_size, tex_size, 3), colour, np.uint8))
    m.visual = trimesh.visual.TextureVisuals(uv=m.vertices[:, :2] / 1.2 + 0.5, image=img)
    m.export(folder / "box.obj")
    return folder / "box.obj"


def write_icosphere(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    m = trimesh.creation.icosphere(subdivisions=2, radius=0.7)
    (folder / "ico.obj").write_text(trimesh.exchange.obj.export_obj(m, include_texture=False))
    return folder / "ico.obj"


def write_broken(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "broken.obj"
    p.write_bytes(b"v 1 2\nf 1 2 9 x\n\x00\xff garbage")
    return p


def write_sliver(folder: Path) -> Path:
    """One zero-area triangle spanning 2 units: a valid bounding sphere but nothing visible -> empty render."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "sliver.obj"
    p.write_text("v -1 0 0\nv 1 0 0\nv 0 0 0\nf 1 2 3\n")
    return p


def write_hanging(folder: Path) -> Path:
    """A named pipe with no writer: opening it blocks forever, a genuine hang inside the mesh loader."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "hang.obj"
    os.mkfifo(p)
    return p


def asset_row(assets_dir: Path, mesh: Path, name: str, rotation=None, split: str = "train") -> dict:
    data = b"" if mesh.is_fifo() else mesh.read_bytes()
    return {
        "asset_id": hashlib.sha256(data + name.encode()).hexdigest(),
        "name": name,
        "category": "Test",
        "label": name,
        "split": split,
        "mesh": mesh.relative_to(assets_dir).as_posix(),
        "rotation": rotation,
        "source": "local",
        "textured": False,
        "files": sorted(f.relative_to(assets_dir).as_posix() for f in mesh.parent.iterdir()),
    }


def write_manifest(assets_dir: Path, rows: list[dict]) -> Path:
    rows = sorted(rows, key=lambda r: r["asset_id"])
    p = assets_dir / "manifest.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture
def assets(tmp_path) -> Path:
    """Three good assets: marker cube, textured box, icosphere."""
    d = tmp_path / "assets"
    rows = [
        asset_row(d, write_marker_obj(d / "store" / "marker"), "marker"),
        asset_row(d, write_textured_box(d / "store" / "box"), "box"),
        asset_row(d, write_icosphere(d / "store" / "ico"), "ico"),
    ]
    write_manifest(d, rows)
    return d

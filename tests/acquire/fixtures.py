"""Tiny on-disk fixtures for the acquire tests: cube meshes, textures, and crafted Sweet Home 3D libraries."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from PIL import Image


def cube_obj(size: float = 1.0, mtl: str | None = None, textured: bool = False, shift: float = 0.0) -> str:
    """A closed cube (8 vertices, 12 triangles); `shift` makes geometrically distinct but equally valid cubes."""
    s = size
    v = [(0, 0, 0), (s, 0, 0), (s, s, 0), (0, s, 0), (0, 0, s), (s, 0, s), (s, s, s), (0, s, s)]
    quads = [(1, 2, 3, 4), (5, 8, 7, 6), (1, 5, 6, 2), (2, 6, 7, 3), (3, 7, 8, 4), (5, 1, 4, 8)]
    lines = [f"mtllib {mtl}"] if mtl else []
    lines += [f"v {x + shift} {y} {z}" for x, y, z in v]
    if textured:
        lines += ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1"]
    if mtl:
        lines.append("usemtl m")
    for a, b, c, d in quads:
        if textured:
            lines += [f"f {a}/1 {b}/2 {c}/3", f"f {a}/1 {c}/3 {d}/4"]
        else:
            lines += [f"f {a} {b} {c}", f"f {a} {c} {d}"]
    return "\n".join(lines) + "\n"


def grid_obj(n: int) -> str:
    """A flat n x n grid of quads = 2*n*n triangles: a valid mesh with many faces (for max_faces tests)."""
    lines = [f"v {i} {j} {0.01 * ((i * j) % 3)}" for i in range(n + 1) for j in range(n + 1)]
    idx = lambda i, j: i * (n + 1) + j + 1  # noqa: E731
    for i in range(n):
        for j in range(n):
            lines.append(f"f {idx(i, j)} {idx(i + 1, j)} {idx(i + 1, j + 1)}")
            lines.append(f"f {idx(i, j)} {idx(i + 1, j + 1)} {idx(i, j + 1)}")
    return "\n".join(lines) + "\n"


def png_bytes(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


MTL_TEXTURED = "newmtl m\nKd 1 1 1\nmap_Kd tex.png\n"
MTL_PLAIN = "newmtl m\nKd 0.8 0.2 0.2\n"


def sh3f_item(i: int, name: str, model: str, category: str = "Living room", **extra: str) -> str:
    keys = {
        "id": f"test#{i}",
        "name": name,
        "category": category,
        "model": model,
        "multiPartModel": "true",
        "width": "50",
        "depth": "40",
        "height": "90",
        "doorOrWindow": "false",
        "creator": "Tester",
        "tags": "Seat, Wood",
    }
    keys.update(extra)
    return "".join(f"{k}#{i}={v}\n" for k, v in keys.items()) + "\n"


def write_zip(path: Path, entries: dict[str, bytes | str], symlinks: dict[str, str] | None = None) -> Path:
    """Write a zip with the given member names verbatim (ZipFile.writestr does not sanitise names)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_library(
    folder: Path,
    stem: str = "TestLib",
    n_chairs: int = 3,
    extra_items: str = "",
    extra_entries: dict[str, bytes | str] | None = None,
    symlinks: dict[str, str] | None = None,
    licence: str = "Creative Commons Attribution 3.0",
) -> Path:
    """A small but real .sh3f: `n_chairs` distinct textured/plain cubes named "<adj> chair", plus extra items."""
    folder.mkdir(parents=True, exist_ok=True)
    props = f"# test library\nid=Test\nname=Test \\u00e9dition\nlicense={licence}\n\n"
    entries: dict[str, bytes | str] = {}
    for i in range(1, n_chairs + 1):
        d = f"lib/chair{i}"
        textured = i % 2 == 1
        props += sh3f_item(i, f"Chair {i}", f"/{d}/chair{i}.obj")
        entries[f"{d}/chair{i}.obj"] = cube_obj(mtl=f"chair{i}.mtl", textured=textured, shift=float(i))
        entries[f"{d}/chair{i}.mtl"] = MTL_TEXTURED if textured else MTL_PLAIN
        if textured:
            entries[f"{d}/tex.png"] = png_bytes((10 * i, 100, 50))
        entries[f"{d}/LICENSE.txt"] = f"chair {i} by Tester\n"
    entries.update(extra_entries or {})
    entries["PluginFurnitureCatalog.properties"] = (props + extra_items).encode("iso-8859-1")
    return write_zip(folder / f"{stem}.sh3f", entries, symlinks)

"""Which files a mesh needs besides itself: OBJ -> MTL libraries -> texture maps; glTF -> buffers and images.

Used for sources that hand us a single mesh path (the local CSV). References must stay inside the mesh's folder
(no "..", no absolute paths): the asset is stored as one self-contained folder, and a reference that climbs out of it
is either a broken asset or an attempt to read files we were not given.
"""

from __future__ import annotations

import json
import posixpath
from typing import Callable
from urllib.parse import unquote

from ovt.acquire.candidate import ItemError
from ovt.acquire.safezip import check_member_name

Reader = Callable[[str], bytes]   # relative path -> bytes; raises FileNotFoundError

_MTL_MAPS = ("map_kd", "map_ka", "map_ks", "map_ns", "map_d", "map_bump", "bump", "disp", "decal", "refl", "norm",
             "map_pr", "map_pm", "map_ps", "map_ke")
SELF_CONTAINED = (".glb", ".ply", ".stl", ".off", ".3mf", ".dae")


def _ref(base_dir: str, ref: str, owner: str) -> str:
    ref = ref.strip().replace("\\", "/")
    try:
        return str(check_member_name(posixpath.normpath(posixpath.join(base_dir, ref)) if ref else ""))
    except ItemError:
        raise ItemError("unsafe_path", f"{owner} references {ref!r}, outside the mesh folder") from None


def _read(read: Reader, rel: str, owner: str) -> bytes:
    try:
        return read(rel)
    except FileNotFoundError:
        raise ItemError("missing_file", f"{owner} references {rel!r}, which does not exist") from None


def _lines(data: bytes):
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def collect_files(mesh: str, read: Reader) -> dict[str, bytes]:
    """Read `mesh` (a relative path) and everything it references; keys are relative to the mesh's folder."""
    mesh_dir, mesh_name = posixpath.split(mesh)
    files: dict[str, bytes] = {mesh_name: _read(read, mesh, "csv")}

    def add(rel_to_dir: str, owner: str) -> bytes:
        if rel_to_dir not in files:
            files[rel_to_dir] = _read(read, posixpath.join(mesh_dir, rel_to_dir) if mesh_dir else rel_to_dir, owner)
        return files[rel_to_dir]

    ext = posixpath.splitext(mesh_name)[1].lower()
    if ext == ".obj":
        for line in _lines(files[mesh_name]):
            if line.lower().startswith("mtllib"):
                for lib in line.split()[1:]:
                    mtl = _ref("", lib, mesh_name)
                    mtl_data = add(mtl, mesh_name)
                    for mline in _lines(mtl_data):
                        key, _, rest = mline.partition(" ")
                        if key.lower() in _MTL_MAPS and rest.strip():
                            # options ("-s 1 1 1 file.png") come first; the file name is the last token
                            add(_ref(posixpath.dirname(mtl), rest.split()[-1], mtl), mtl)
    elif ext == ".gltf":
        try:
            doc = json.loads(files[mesh_name])
        except ValueError as err:
            raise ItemError("unreadable", f"{mesh_name}: not JSON ({err})") from None
        for entry in list(doc.get("buffers", [])) + list(doc.get("images", [])):
            uri = entry.get("uri") if isinstance(entry, dict) else None
            if uri and not uri.startswith("data:"):
                add(_ref("", unquote(uri), mesh_name), mesh_name)
    return files

"""Which files a mesh needs besides itself (OBJ -> MTL -> texture maps; glTF -> buffers and images; Collada ->
images), and what to do when a reference is broken.

Two steps:
- `collect_files(mesh, read)` (sources that hand us one mesh path: the local CSV) reads the mesh and everything it
  references. A reference may climb into a sibling folder (`../textures/x.png`) as long as it stays under the
  source root; such a file is stored under `_ext/<root-relative path>` inside the asset (an MTL beside the mesh, as
  `_ext_<root-relative path with _ for />`) and the reference is rewritten to it, because the renderer (trimesh's
  resolver) never leaves the mesh's folder. A reference that
  leaves the root is refused (`unsafe_path`): it is either a broken asset or an attempt to read files we were not
  given. A reference that does not exist, or an absolute one (exporters
  write `C:/textures/wood.jpg` or `/home/me/...` into MTLs), is not an error: the mesh is still drawable untextured.
- `sanitize(mesh, files)` (every source) lists those missing references and rewrites absolute ones out of OBJ/MTL/
  Collada files, so that the renderer, which resolves references relative to the mesh's folder, can never open a
  path outside the stored asset.

Only a missing glTF *buffer* is fatal (`missing_file`): it holds the geometry itself.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Callable, Iterable
from urllib.parse import unquote

from ovt.acquire.candidate import ItemError
from ovt.acquire.safezip import check_member_name

Reader = Callable[[str], bytes]  # relative path -> bytes; raises FileNotFoundError

_MTL_MAPS = (
    "map_kd",
    "map_ka",
    "map_ks",
    "map_ns",
    "map_d",
    "map_bump",
    "bump",
    "disp",
    "decal",
    "refl",
    "norm",
    "map_pr",
    "map_pm",
    "map_ps",
    "map_ke",
)
# The mesh formats the stage reads (trimesh loaders available in the environment); docs/architecture.md lists them.
SUPPORTED = (".obj", ".gltf", ".glb", ".ply", ".stl", ".off", ".dae")
_DAE_IMAGE = re.compile(rb"(<image\b[^>]*>\s*<init_from>\s*(?:<ref>)?)([^<]*)((?:</ref>)?\s*</init_from>)", re.DOTALL)

_BLANK_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"
)


def is_absolute(ref: str) -> bool:
    ref = ref.strip().replace("\\", "/")
    return ref.startswith("/") or ref.lower().startswith("file:") or bool(re.match(r"^[A-Za-z]:", ref))


def _lines(data: bytes):
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _mtl_refs(data: bytes) -> list[str]:
    out = []
    for line in _lines(data):
        key, _, rest = line.partition(" ")
        if key.lower() in _MTL_MAPS and rest.strip():
            out.append(rest.split()[-1])  # options ("-s 1 1 1 file.png") come first; the file name is last
    return out


# Line boundaries str.splitlines() knows besides "\n" and "\r\n": text holding any of them takes the slow path.
_RARE_BREAKS = re.compile("[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]|\r(?!\n)")
_MTLLIB_LINE = re.compile(r"^.*mtllib.*$", re.IGNORECASE | re.MULTILINE)


def _obj_mtllibs(data: bytes) -> list[str]:
    """`mtllib` references of an OBJ. A large OBJ has millions of lines and one or two mtllib lines, so a regex
    finds the candidate lines and only those go through the line rules (same result as scanning every line)."""
    text = data.decode("utf-8", errors="replace")
    if _RARE_BREAKS.search(text):
        lines: Iterable[str] = _lines(data)
    else:
        lines = (s for s in (m.group(0).strip() for m in _MTLLIB_LINE.finditer(text)) if s and not s.startswith("#"))
    return [lib for line in lines if line.lower().startswith("mtllib") for lib in line.split()[1:]]


def _dae_images(data: bytes) -> list[str]:
    return [unquote(m.group(2).decode("utf-8", errors="replace").strip()) for m in _DAE_IMAGE.finditer(data)]


def _gltf_uris(data: bytes, name: str) -> tuple[list[str], list[str]]:
    try:
        doc = json.loads(data)
    except ValueError as err:
        raise ItemError("unparseable", f"{name}: not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ItemError("unparseable", f"{name}: not a glTF document")

    def uris(key: str) -> list[str]:
        return [
            unquote(e["uri"])
            for e in doc.get(key, []) or []
            if isinstance(e, dict) and isinstance(e.get("uri"), str) and not e["uri"].startswith("data:")
        ]

    return uris("buffers"), uris("images")


def _join(base_dir: str, ref: str, owner: str) -> str:
    """`ref` (relative to `base_dir`, both under the root) as a root-relative path; unsafe_path if it leaves it."""
    ref = ref.strip().replace("\\", "/")
    joined = posixpath.normpath(posixpath.join(base_dir, ref))
    try:
        return str(check_member_name(joined))
    except ItemError:
        raise ItemError("unsafe_path", f"{owner} references {ref!r}, outside the asset root") from None


EXT = "_ext"  # where files from outside the mesh's folder go inside the stored asset


def collect_files(mesh: str, read: Reader) -> dict[str, bytes]:
    """Read `mesh` (root-relative) and everything it references that exists; keys relative to the mesh's folder.

    The renderer resolves references inside the mesh's folder only, so a file from a sibling folder
    (`../textures/x.png`) is stored under `_ext/<its root-relative path>` and the reference to it is rewritten.
    """
    try:
        found: dict[str, bytes] = {mesh: read(mesh)}
    except FileNotFoundError:
        raise ItemError("missing_file", f"mesh {mesh!r} does not exist") from None
    refs: list[tuple[str, str, str]] = []  # (owner, reference as written, target), root-relative

    def add(owner: str, ref: str, required: bool = False) -> bytes | None:
        if is_absolute(ref):
            return None  # listed as missing (and rewritten out) by sanitize()
        rel = _join(posixpath.dirname(owner), ref, owner)
        if rel not in found:
            try:
                found[rel] = read(rel)
            except FileNotFoundError:
                if required:
                    raise ItemError("missing_file", f"{owner} references {rel!r}, which does not exist") from None
                return None
        refs.append((owner, ref, rel))
        return found[rel]

    ext = posixpath.splitext(mesh)[1].lower()
    if ext == ".obj":
        for lib in _obj_mtllibs(found[mesh]):
            mtl_data = add(mesh, lib)
            if mtl_data is not None:
                mtl = refs[-1][2]
                for tex in _mtl_refs(mtl_data):
                    add(mtl, tex)
    elif ext == ".gltf":
        buffers, images = _gltf_uris(found[mesh], mesh)
        for uri in buffers:
            if is_absolute(uri):
                raise ItemError("unsafe_path", f"{mesh} buffer {uri!r} is an absolute path")
            add(mesh, uri, required=True)
        for uri in images:
            add(mesh, uri)
    elif ext == ".dae":
        for uri in _dae_images(found[mesh]):
            add(mesh, uri)

    mesh_dir = posixpath.dirname(mesh)

    def key(p: str) -> str:
        inside = not mesh_dir or p.startswith(mesh_dir + "/")
        if inside:
            return posixpath.relpath(p, mesh_dir or ".")
        if p.lower().endswith(".mtl"):
            # beside the mesh: trimesh resolves an MTL's textures from the mesh's folder, Blender from the MTL's;
            # with the MTL in the mesh's folder both read the same (rewritten) paths
            return f"{EXT}_{p.replace('/', '_')}"
        return f"{EXT}/{p}"

    out = {key(p): b for p, b in found.items()}
    for owner, ref, target in refs:
        new = posixpath.relpath(key(target), posixpath.dirname(key(owner)) or ".")
        if new != posixpath.normpath(ref.strip().replace("\\", "/")):
            out[key(owner)] = _rewrite_ref(key(owner), out[key(owner)], ref, new)
    return out


def _rewrite_ref(owner: str, data: bytes, old: str, new: str) -> bytes:
    """Replace reference `old` by `new` where `owner` (OBJ mtllib, MTL maps, Collada image, glTF uri) names it."""
    ext = posixpath.splitext(owner)[1].lower()
    if ext == ".gltf":
        doc = json.loads(data)
        for entry in list(doc.get("buffers", []) or []) + list(doc.get("images", []) or []):
            if isinstance(entry, dict) and isinstance(entry.get("uri"), str) and unquote(entry["uri"]) == old:
                entry["uri"] = new
        return json.dumps(doc, sort_keys=True).encode()
    if ext == ".dae":
        return _DAE_IMAGE.sub(
            lambda m: (
                m.group(1) + new.encode() + m.group(3)
                if unquote(m.group(2).decode("utf-8", "replace").strip()) == old
                else m.group(0)
            ),
            data,
        )
    keywords = ("mtllib",) if ext == ".obj" else _MTL_MAPS
    lines = []
    for raw in data.split(b"\n"):
        toks = raw.decode("utf-8", errors="replace").split()
        if len(toks) > 1 and toks[0].lower() in keywords and old in toks[1:]:
            raw = " ".join(new if t == old else t for t in toks).encode()
        lines.append(raw)
    return b"\n".join(lines)


def _drop_lines(data: bytes, keyword_ok: Callable[[str], bool], bad: set[str]) -> bytes:
    """Comment out lines whose keyword passes `keyword_ok` and whose last token is in `bad`."""
    out = []
    for raw in data.split(b"\n"):
        toks = raw.decode("utf-8", errors="replace").split()
        if len(toks) > 1 and keyword_ok(toks[0].lower()) and any(t in bad for t in toks[1:]):
            raw = b"# reference dropped (absolute path): " + raw.strip()
        out.append(raw)
    return b"\n".join(out)


def sanitize(mesh: str, files: dict[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    """Return (files with absolute references removed, sorted missing reference names) for the asset's `mesh`."""
    files = dict(files)
    missing: set[str] = set()
    mesh_dir = posixpath.dirname(mesh)

    def resolve(base_dir: str, ref: str) -> str | None:
        """The file key `ref` points at, or None (recorded as missing) if absolute or absent."""
        if is_absolute(ref):
            missing.add(ref.strip())
            return None
        try:
            rel = str(check_member_name(posixpath.normpath(posixpath.join(base_dir, ref.strip().replace("\\", "/")))))
        except ItemError:
            missing.add(ref.strip())  # climbs out of the stored folder: the renderer will not follow it
            return None
        if rel not in files:
            missing.add(ref.strip())
            return None
        return rel

    ext = posixpath.splitext(mesh)[1].lower()
    if ext == ".obj":
        libs = _obj_mtllibs(files[mesh])
        absolute = {lib for lib in libs if is_absolute(lib)}
        for lib in libs:
            mtl = resolve(mesh_dir, lib)
            if mtl is None:
                continue
            refs = _mtl_refs(files[mtl])
            for tex in refs:
                resolve(posixpath.dirname(mtl), tex)
            bad = {t for t in refs if is_absolute(t)}
            if bad:
                files[mtl] = _drop_lines(files[mtl], lambda k: k in _MTL_MAPS, bad)
        if absolute:
            files[mesh] = _drop_lines(files[mesh], lambda k: k == "mtllib", absolute)
    elif ext == ".dae":
        refs = _dae_images(files[mesh])
        for uri in refs:
            resolve(mesh_dir, uri)
        if any(is_absolute(u) for u in refs):
            files[mesh] = _DAE_IMAGE.sub(
                lambda m: (
                    m.group(0)
                    if not is_absolute(unquote(m.group(2).decode("utf-8", "replace")))
                    else m.group(1) + m.group(3)
                ),
                files[mesh],
            )
    elif ext == ".gltf":
        _, images = _gltf_uris(files[mesh], mesh)
        for uri in images:
            resolve(mesh_dir, uri)
        if any(is_absolute(u) for u in images):
            doc = json.loads(files[mesh])
            for img in doc.get("images", []):
                if isinstance(img, dict) and isinstance(img.get("uri"), str) and is_absolute(unquote(img["uri"])):
                    img["uri"] = _BLANK_PNG  # keeps texture indices valid; draws as plain white
            files[mesh] = json.dumps(doc, sort_keys=True).encode()
    return files, sorted(missing)

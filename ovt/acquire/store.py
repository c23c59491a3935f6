"""The content-addressed asset store: `store/<id[:2]>/<id>/` holds one asset's mesh, materials and textures.

Asset id = sha256 over the identity files (mesh, materials, textures; attribution texts excluded) in sorted order of
their relative path, each contributing `path \\0 size(8 bytes, big endian) bytes`. Paths are included because an
MTL refers to its textures by name: the same bytes under other names are a different renderable asset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from ovt.acquire.safezip import safe_target

STORE = "store"


def asset_id(files: dict[str, bytes], exclude: frozenset[str] | set[str] = frozenset()) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        if rel in exclude:
            continue
        data = files[rel]
        h.update(rel.encode("utf-8") + b"\0" + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def asset_dir(out_dir: Path, aid: str) -> Path:
    return out_dir / STORE / aid[:2] / aid


def rel_asset_dir(aid: str) -> str:
    return str(PurePosixPath(STORE, aid[:2], aid))


def stage_files(out_dir: Path, aid: str, files: dict[str, bytes]) -> Path:
    """Write `files` into a fresh temporary folder beside the asset's final place; the caller commits or discards.

    Every relative name is checked against traversal again here: sources other than zips (CSV rows, S3 keys,
    MTL texture references) reach this point too.
    """
    parent = out_dir / STORE / aid[:2]
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{aid}.", suffix=".tmp", dir=parent))
    try:
        for rel, data in files.items():
            target = safe_target(tmp, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def commit(tmp: Path, final: Path) -> None:
    """Rename a staged folder into place. The store is content-addressed: an existing folder is already right."""
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, final)


def list_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file())


def garbage_collect(out_dir: Path, keep: set[str]) -> int:
    """Delete store folders (and leftover temporaries) not in `keep`, so the output is a function of the inputs."""
    root = out_dir / STORE
    removed = 0
    if not root.is_dir():
        return 0
    for shard in sorted(root.iterdir()):
        if not shard.is_dir():
            shard.unlink()
            continue
        for d in sorted(shard.iterdir()):
            if d.name not in keep:
                shutil.rmtree(d) if d.is_dir() else d.unlink()
                removed += 1
        if not any(shard.iterdir()):
            shard.rmdir()
    return removed

"""Reading zip members (the .sh3f libraries) without letting a crafted archive escape or explode.

Threats handled:
- path traversal: absolute names (`/x`, `C:\\x`, `\\\\host\\x`), `..` components, and any name that resolves outside
  the destination folder are refused;
- symlinks: zip entries whose Unix mode says "symlink" are refused (extracting one would let a later entry write
  through it);
- zip bombs: sizes are counted while decompressing, not taken from the (forgeable) header, against per-asset and
  per-archive budgets.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ovt.acquire.candidate import ItemError

_CHUNK = 1 << 20


def check_member_name(name: str) -> PurePosixPath:
    """Return `name` as a safe relative POSIX path, or raise ItemError("unsafe_path")."""
    if not name or "\x00" in name:
        raise ItemError("unsafe_path", f"empty or NUL in member name {name!r}")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise ItemError("unsafe_path", f"absolute member name {name!r}")
    parts = PurePosixPath(norm).parts
    if any(p == ".." for p in parts):
        raise ItemError("unsafe_path", f"'..' in member name {name!r}")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def safe_target(dest: str | os.PathLike, name: str) -> Path:
    """Where member `name` may be written under `dest`; raise ItemError if it would land outside."""
    rel = check_member_name(name)
    root = Path(dest).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise ItemError("unsafe_path", f"member {name!r} resolves outside {root}")
    return target


class Budget:
    """Counts decompressed bytes against a limit shared by several reads."""

    def __init__(self, limit: int, what: str):
        self.limit, self.what, self.used = limit, what, 0

    def take(self, n: int, name: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise ItemError("too_large", f"{self.what} exceeds {self.limit} bytes uncompressed (at {name!r})")


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *budgets: Budget) -> bytes:
    """Read one regular-file member, counting real decompressed bytes against every budget."""
    check_member_name(info.filename)
    if is_symlink(info):
        raise ItemError("unsafe_path", f"symlink member {info.filename!r}")
    if info.is_dir():
        raise ItemError("unsafe_path", f"directory member read as a file: {info.filename!r}")
    chunks: list[bytes] = []
    with zf.open(info) as fh:
        while chunk := fh.read(_CHUNK):
            for b in budgets:
                b.take(len(chunk), info.filename)
            chunks.append(chunk)
    return b"".join(chunks)


def safe_extract(
    zf: zipfile.ZipFile, dest: str | os.PathLike, members: list[str] | None = None, max_bytes: int = 1 << 30
) -> list[Path]:
    """Extract `members` (default: all) under `dest`, refusing unsafe entries before writing anything.

    All-or-nothing on the checks: one unsafe or oversized member raises ItemError and nothing is written.
    """
    infos = [zf.getinfo(m) for m in members] if members is not None else zf.infolist()
    budget = Budget(max_bytes, "archive")
    plan: list[tuple[Path, zipfile.ZipInfo]] = []
    for info in infos:
        target = safe_target(dest, info.filename)
        if is_symlink(info):
            raise ItemError("unsafe_path", f"symlink member {info.filename!r}")
        if not info.is_dir():
            plan.append((target, info))
    data = [(t, read_member(zf, i, budget)) for t, i in plan]
    written = []
    for target, blob in data:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
        written.append(target)
    return written

"""Small I/O helpers every stage shares: atomic writes, content hashes, JSON lines.

Why atomic: a stage killed mid-write must never leave a file that a rerun (or the next stage) reads as complete.
Every writer here writes to a temporary file in the destination folder, fsyncs, then `os.replace`s it into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

_CHUNK = 1 << 20


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which would race with
    other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): the set-and-restore fallback
    os.umask(mask)
    return mask


def chmod_like_open(path: str | os.PathLike, mode: int) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give them what open()/mkdir() would (0666/0777 minus umask), so
    a stage output is readable by the group/others exactly when the user's umask says so."""
    os.chmod(path, mode & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, perms: int | None = None) -> Iterator[Path]:
    """A temporary file beside `path` for the block to fill by name (e.g. a memory-mapped array); on clean exit it
    is fsynced and renamed over `path`, on any error removed.

    The file gets the permissions open() would give it (0666 minus the umask), or exactly `perms` (e.g. 0o600 for
    a key), set before any byte is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if perms is None:
            chmod_like_open(tmp, 0o666)
        else:
            os.chmod(tmp, perms)
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb", *, perms: int | None = None) -> Iterator[Any]:
    """`atomic_path` opened as a file object (`mode` "wb" or "w", UTF-8)."""
    text_args: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8"}
    with atomic_path(path, perms=perms) as tmp, open(tmp, mode, **text_args) as fh:
        yield fh


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, perms: int | None = None) -> None:
    with atomic_writer(path, "wb", perms=perms) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_writer(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when the block succeeds.

    An existing directory at `path` is replaced only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        chmod_like_open(tmp, 0o777)
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: the same value always gives the same string (and digest)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def stable_digest(obj: Any, length: int = 64) -> str:
    """sha256 of `canonical_json(obj)`, used as a content key for params/inputs combinations."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    n = 0
    with atomic_writer(path, "w") as fh:
        for row in rows:
            fh.write(canonical_json(row) + "\n")
            n += 1
    return n


def append_jsonl(path: str | os.PathLike, row: Any) -> None:
    """Append one line (for per-item failure logs, where losing the tail line on a crash is acceptable)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(canonical_json(row) + "\n")

"""A folder (or an S3 prefix) of meshes plus a CSV `path,category[,name][,up][,front][,rotation]` naming them.

`path` is relative to the root and ends in one of `meshdeps.SUPPORTED` (.obj .gltf .glb .ply .stl .off .dae); the
mesh's MTL/texture/buffer/image references are collected from the files themselves (`ovt.acquire.meshdeps`: a
missing or absolute texture or MTL is a warning, a reference leaving the root is refused). Orientation, optional:
`up` (x|y|z|-x|-y|-z, default y) and `front` (default +z, or the tilt's front for another `up`), or `rotation`
(9 numbers, raw -> canonical, row-major); it becomes the manifest's `rotation` (`ovt.acquire.axes`).
An `s3://bucket/prefix` root is read with boto3 (credentials and endpoint from the usual AWS environment variables,
or `local.s3_endpoint_url`).
"""

from __future__ import annotations

import csv
import io
import posixpath
from pathlib import Path
from typing import Callable, Iterator

from ovt.acquire.axes import axes_rotation, parse_rotation
from ovt.acquire.candidate import AssetCandidate, ItemError, SourceError
from ovt.acquire.config import LocalParams
from ovt.acquire.meshdeps import SUPPORTED, collect_files
from ovt.acquire.safezip import check_member_name, safe_target

REQUIRED = ("path", "category")
OPTIONAL = ("name", "up", "front", "rotation")


class FolderReader:
    def __init__(self, root: Path):
        if not root.is_dir():
            raise SourceError(f"acquire.local.root: {root} is not a folder")
        self.root = root

    def __call__(self, rel: str) -> bytes:
        target = safe_target(self.root, rel)  # also refuses symlinks pointing out of the root (resolve())
        if not target.is_file():
            raise FileNotFoundError(rel)
        return target.read_bytes()

    def describe(self) -> str:
        return str(self.root)


class S3Reader:
    def __init__(self, url: str, endpoint_url: str | None):
        import boto3  # only needed for s3:// roots
        import botocore.exceptions

        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise SourceError(f"acquire.local.root: {url!r} has no bucket (expected s3://bucket/prefix)")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=endpoint_url)
        self._missing = (self.client.exceptions.NoSuchKey,)
        self._errors = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)

    def __call__(self, rel: str) -> bytes:
        key = posixpath.join(self.prefix, str(check_member_name(rel))) if self.prefix else str(check_member_name(rel))
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._missing:
            raise FileNotFoundError(rel) from None
        except self._errors as err:
            # An OSError, like a failed local read: one item fails (io_error), or the CSV read is a SourceError.
            raise OSError(f"s3://{self.bucket}/{key}: {err}") from err

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_csv(text: str, where: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in cols]
    unknown = [c for c in cols if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        raise SourceError(
            f"{where}: header must be path,category[,name][,up][,front][,rotation]; "
            f"missing {missing}, unknown {unknown}"
        )
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


class LocalSource:
    name = "local"

    def __init__(self, cfg: LocalParams):
        self.cfg = cfg
        root = cfg.root or ""
        self.read: FolderReader | S3Reader = (
            S3Reader(root, cfg.s3_endpoint_url) if root.startswith("s3://") else FolderReader(Path(root))
        )

    def _csv_text(self) -> tuple[str, str]:
        csv_path = self.cfg.csv
        try:
            if Path(csv_path).is_absolute():
                return Path(csv_path).read_text(encoding="utf-8-sig"), csv_path
            return self.read(csv_path).decode("utf-8-sig"), f"{self.read.describe()}/{csv_path}"
        except (FileNotFoundError, ItemError, OSError) as err:
            raise SourceError(f"acquire.local.csv: cannot read {csv_path!r} under {self.cfg.root}: {err}") from None

    def candidates(self) -> Iterator[AssetCandidate | ItemError]:
        text, where = self._csv_text()
        rows = parse_csv(text, where)
        seen: set[str] = set()
        for line_no, row in enumerate(rows, start=2):
            path, category = row.get("path", ""), row.get("category", "")
            ref = path or f"line {line_no}"
            try:
                if not path or not category:
                    raise ItemError("bad_csv", f"line {line_no}: path and category are required")
                path = str(check_member_name(path))
                if posixpath.splitext(path)[1].lower() not in SUPPORTED:
                    raise ItemError("unsupported_format", f"line {line_no}: {path!r} is not one of {SUPPORTED}")
                rotation = _orientation(row, line_no)
            except ItemError as err:
                err.item = f"{self.name}:{ref}"
                yield err
                continue
            if path in seen:
                continue
            seen.add(path)
            stem = posixpath.splitext(posixpath.basename(path))[0]
            yield AssetCandidate(
                source=self.name,
                source_ref=path,
                name=row.get("name") or stem.replace("_", " "),
                category=category,
                mesh=posixpath.basename(path),
                licence=self.cfg.licence,
                creator=self.cfg.creator,
                load_files=_Loader(self.read, path, self.cfg.max_asset_bytes),
                rotation=rotation,
            )


def _orientation(row: dict[str, str], line_no: int):
    up, front, rot = row.get("up", ""), row.get("front", ""), row.get("rotation", "")
    try:
        if rot and (up or front):
            raise ItemError("bad_csv", "give either rotation or up/front, not both")
        if rot:
            return parse_rotation(rot)
        if up or front:
            return axes_rotation(up or "y", front or None)
        return None
    except ItemError as err:
        raise ItemError(err.reason, f"line {line_no}: {err.detail}") from None


class _Loader:
    def __init__(self, read: Callable[[str], bytes], path: str, max_bytes: int):
        self.read, self.path, self.max_bytes = read, path, max_bytes

    def __call__(self) -> dict[str, bytes]:
        files = collect_files(self.path, self.read)
        total = sum(len(b) for b in files.values())
        if total > self.max_bytes:
            raise ItemError("too_large", f"{total} bytes > max_asset_bytes {self.max_bytes}")
        return files

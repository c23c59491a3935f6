"""Webdataset shards: planning, content keys, per-object parts (resume), atomic assembly, reading back.

Layout under <out>/shards/:
  shard-NNNNN.tar   samples `<asset_id>_<view:03d>` with `.png` and `.json`
  shard-NNNNN.json  completion record, written after the tar: the shard is complete only when this exists and its
                    `key` equals the expected content key (so a half-written tar is never trusted)
  .work/shard-NNNNN-<key12>/<asset_id>.tar | <asset_id>.fail.json
                    per-object results of a shard in progress: a killed run resumes from them, re-rendering only
                    the objects that have no part yet; removed once the shard is assembled
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ovt import shards
from ovt.io import atomic_write_json, atomic_writer, stable_digest
from ovt.render.config import RENDER_IMPL_VERSION, RenderParams

# Fields of an acquire manifest row that change rendered bytes or the sample JSON: the id, the digest of the mesh
# and texture bytes as read now (`bytes_sha256`, added by the stage), the rotation and the names. `split` and
# `label` are derived downstream and can change without the pixels changing, so they live only in render's
# manifest.jsonl, not in the shards.
_KEYED_ASSET_FIELDS = ("asset_id", "bytes_sha256", "rotation", "name", "category")


@dataclass(frozen=True)
class ShardSpec:
    index: int
    assets: tuple[dict, ...]  # acquire manifest rows, with `mesh_abs` added
    key: str

    @property
    def name(self) -> str:
        return shards.shard_name(self.index)


def shard_key(assets, cfg: RenderParams, seed: int, renderer: str) -> str:
    return stable_digest(
        {
            "assets": [{k: a.get(k) for k in _KEYED_ASSET_FIELDS} for a in assets],
            "params": cfg.output_fields(),
            "seed": seed,
            "renderer": renderer,
            "impl": RENDER_IMPL_VERSION,
        }
    )


def plan_shards(rows: list[dict], cfg: RenderParams, seed: int, renderer: str) -> list[ShardSpec]:
    n = cfg.objects_per_shard
    return [
        ShardSpec(i, tuple(rows[s : s + n]), shard_key(rows[s : s + n], cfg, seed, renderer))
        for i, s in enumerate(range(0, len(rows), n))
    ]


def tar_path(shards_dir: Path, spec: ShardSpec) -> Path:
    return shards_dir / f"{spec.name}.tar"


def work_dir(shards_dir: Path, spec: ShardSpec) -> Path:
    return shards_dir / ".work" / f"{spec.name}-{spec.key[:12]}"


def completed_record(shards_dir: Path, spec: ShardSpec) -> dict | None:
    """The shard's completion record if the shard is complete for exactly this key, else None."""
    return shards.check(tar_path(shards_dir, spec), expected_key=spec.key)


# ---- per-object parts ----


def part_paths(wdir: Path, asset_id: str) -> tuple[Path, Path]:
    return wdir / f"{asset_id}.tar", wdir / f"{asset_id}.fail.json"


def write_object_part(wdir: Path, asset_id: str, samples: list[dict]) -> None:
    """samples: [{"__key__", "png": bytes, "json": dict}]; written to a temp name and renamed (atomic)."""
    with atomic_writer(part_paths(wdir, asset_id)[0]) as fh:
        shards.write_samples(fh, samples)


def write_object_failure(wdir: Path, asset_id: str, failure: dict) -> None:
    atomic_write_json(part_paths(wdir, asset_id)[1], failure)


def read_object_part(wdir: Path, asset_id: str) -> tuple[Literal["ok"], Path] | tuple[Literal["failed"], dict] | None:
    """("ok", tar path) | ("failed", failure dict) | None when the object has not been done yet."""
    ok_p, fail_p = part_paths(wdir, asset_id)
    if ok_p.exists():
        return "ok", ok_p
    if fail_p.exists():
        return "failed", json.loads(fail_p.read_text())
    return None


def assemble_shard(shards_dir: Path, spec: ShardSpec, rows: list[dict], renderer: str, n_views: int) -> dict:
    """Concatenate the object parts into the shard tar (atomic), then write the completion record.

    The samples go through the one shard writer (`ovt.shards.write_samples`), streamed part by part, so the shard
    has exactly the bytes that writer gives these samples: deterministic, whoever rendered the parts."""
    wdir = work_dir(shards_dir, spec)
    ok, failures, parts = [], [], []
    for a in spec.assets:  # every object decided before anything is written
        state = read_object_part(wdir, a["asset_id"])
        if state is None:
            raise RuntimeError(f"{spec.name}: object {a['asset_id']} has no result; cannot assemble")
        if state[0] == "failed":
            failures.append(state[1])
            continue
        ok.append(a["asset_id"])
        parts.append(state[1])
    with atomic_writer(tar_path(shards_dir, spec)) as fh:
        shards.write_samples(
            fh, ({"__key__": key, **members} for part in parts for key, members in shards.iter_samples(part))
        )
    ok_set = set(ok)
    record = shards.write_record(
        tar_path(shards_dir, spec),
        {
            "key": spec.key,
            "shard": spec.name,
            "assets": ok,
            "failures": failures,
            "n_views": n_views,
            "renderer": renderer,
            "impl": RENDER_IMPL_VERSION,
            "rows": [r for r in rows if r["asset_id"] in ok_set],
        },
    )
    shutil.rmtree(wdir, ignore_errors=True)
    return record

"""The acquire stage: sources -> filters -> content-addressed store -> validated, labelled, split manifest.

Outputs under `AcquirePaths.out_dir` (docs/architecture.md, "acquire -> data/assets/"):
  store/<id[:2]>/<id>/   one folder per usable asset (mesh + materials + textures [+ attribution texts])
  manifest.jsonl         one row per usable asset, sorted by asset_id (byte-identical for identical inputs)
  failures.jsonl         one row per skipped candidate: {stage, item, error, detail}
  stats.json             counts by source/category/label/split, failure reasons, timings

Rerunning reuses what is in the store: an asset whose id folder exists and whose row is in the previous manifest
(same validator version) is neither re-extracted nor re-inspected. Store folders no longer referenced are deleted at
the end, so the output depends only on the inputs and params, never on history.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, cast

from tqdm import tqdm

from ovt.acquire import store
from ovt.acquire.candidate import AssetCandidate, ItemError
from ovt.acquire.config import AcquireParams
from ovt.acquire.labels import assign_labels, raw_label
from ovt.acquire.meshdeps import sanitize
from ovt.acquire.sources import build_source
from ovt.acquire.split import SPLITS, assign_groups, assign_splits, split_object
from ovt.acquire.validate import VALIDATOR_VERSION, MeshInfo, check_declared, check_limits, inspect_mesh
from ovt.io import atomic_write_json, iter_jsonl, stable_digest, write_jsonl_atomic

log = logging.getLogger(__name__)

STAGE = "acquire"
MANIFEST, FAILURES, STATS = "manifest.jsonl", "failures.jsonl", "stats.json"
UNLABELLED = "_unlabelled"


def _failure(item: str, err: ItemError) -> dict[str, str]:
    log.warning("skipping %s: %s: %s", item, err.reason, err.detail)
    return {"stage": STAGE, "item": item, "error": err.reason, "detail": err.detail}


def _load_cache(out_dir: Path) -> dict[str, MeshInfo]:
    """Mesh statistics from the previous run's manifest, if it was produced by the same validator."""
    stats_path, manifest_path = out_dir / STATS, out_dir / MANIFEST
    if not (stats_path.exists() and manifest_path.exists()):
        return {}
    try:
        if json.loads(stats_path.read_text()).get("validator_version") != VALIDATOR_VERSION:
            return {}
        return {
            r["asset_id"]: MeshInfo(
                int(r["n_vertices"]),
                int(r["n_faces"]),
                bool(r["textured_mesh"]),
                # written from MeshInfo.extents, a 3-vector
                cast(tuple[float, float, float], tuple(float(x) for x in r["extents"])),
            )
            for r in iter_jsonl(manifest_path)
        }
    except (ValueError, KeyError, TypeError) as err:  # a damaged previous output is just not a cache
        log.warning("ignoring unreadable previous manifest/stats: %s", err)
        return {}


class _Filter:
    def __init__(self, cfg: AcquireParams):
        f = cfg.filters
        self.drop = {c.casefold() for c in f.drop_categories}
        self.include = [re.compile(p) for p in f.include_names]
        self.exclude = [re.compile(p) for p in f.exclude_names]

    def reason(self, c: AssetCandidate) -> str | None:
        if c.category.casefold() in self.drop:
            return "category"
        if self.include and not any(p.search(c.name) for p in self.include):
            return "name_not_included"
        if any(p.search(c.name) for p in self.exclude):
            return "name_excluded"
        return None


def _ordered(cands: list[AssetCandidate], seed: int, max_assets: int | None) -> list[AssetCandidate]:
    """Processing order. Normally the sources' own order (so the first source wins a duplicate); with max_assets,
    a seeded hash order so that a tiny config is a deterministic, unbiased sample rather than the first N items."""
    if max_assets is None:
        return cands
    return sorted(cands, key=lambda c: (stable_digest([seed, "pick", c.item]), c.item))


@dataclass(frozen=True)
class _Accepted:
    aid: str
    mesh: str  # the mesh's path inside the asset folder
    info: MeshInfo
    missing: list[str]  # references (MTL, textures) that are absent or absolute: drawn untextured


@dataclass(frozen=True)
class _Staged:
    """A new asset written to a temporary folder in the store, waiting for its mesh inspection."""

    aid: str
    mesh: str
    missing: list[str]
    tmp: Path


def _stage(
    c: AssetCandidate,
    out_dir: Path,
    cache: dict[str, MeshInfo],
    seen: dict[str, str],
    cfg: AcquireParams,
    counters: Counter,
    settle: Callable[[str], None] = lambda aid: None,
) -> _Accepted | _Staged | None:
    """Read, hash and stage one candidate: None if it duplicates an asset already accepted this run, _Accepted if
    the store already holds it, else _Staged (to be inspected, then committed or discarded by `_finish`).

    `settle(aid)` first decides any earlier candidate with the same content that is still being inspected."""
    loaded = c.load_files()
    mesh = c.mesh
    if mesh not in loaded:
        raise ItemError("missing_file", f"mesh {mesh!r} not among the asset's files")
    # Refuse what the header/first pass already condemns before anything is written or parsed.
    check_declared(mesh, loaded[mesh], cfg.filters.max_faces)
    files, missing = sanitize(mesh, loaded)
    if missing:
        log.warning("%s: drawn untextured, references missing or absolute: %s", c.item, ", ".join(missing))
    aid = store.asset_id(files, c.attribution)
    settle(aid)
    if aid in seen:
        counters["duplicates"] += 1
        log.info("%s duplicates %s (asset %s); keeping the first", c.item, seen[aid], aid[:12])
        return None
    final = store.asset_dir(out_dir, aid)
    if final.is_dir():
        if aid in cache:
            counters["reused"] += 1
            info = cache[aid]
        else:  # in the store but not in the previous manifest: inspect in place
            info = inspect_mesh(final / mesh)
        check_limits(info, cfg.filters.min_faces, cfg.filters.max_faces)
        return _Accepted(aid, mesh, info, missing)
    # Inspected before committing, so that a failing asset never enters the store (and needs no clean-up).
    return _Staged(aid, mesh, missing, store.stage_files(out_dir, aid, files))


def _finish(s: _Staged, inspected: Future, out_dir: Path, cfg: AcquireParams, counters: Counter) -> _Accepted:
    try:
        info = inspected.result()
        check_limits(info, cfg.filters.min_faces, cfg.filters.max_faces)
    except BaseException:
        shutil.rmtree(s.tmp, ignore_errors=True)
        raise
    store.commit(s.tmp, store.asset_dir(out_dir, s.aid))
    counters["extracted"] += 1
    return _Accepted(s.aid, s.mesh, info, s.missing)


class _Inline:
    """The executor interface, run in the calling process (one worker: no pool to start)."""

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - delivered through the future, like a pool's
            fut.set_exception(err)
        return fut

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc) -> None:
        return None


def _inspector(n: int):
    """Where meshes are parsed: parsing (trimesh, pure Python for OBJ) is most of this stage's time, and meshes are
    independent, so they go to a process pool (`n` workers) while this process reads, hashes and stages the next
    ones."""
    return _Inline() if n <= 1 else ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"))


def _row(c: AssetCandidate, a: _Accepted, out_dir: Path) -> dict[str, Any]:
    rel = store.rel_asset_dir(a.aid)
    info = a.info
    return {
        "asset_id": a.aid,
        "name": c.name,
        "category": c.category,
        "label": None,
        "tags": list(c.tags),
        "licence": c.licence,
        "creator": c.creator,
        "source": c.source,
        "source_ref": c.source_ref,
        "split": None,
        "group": None,
        "mesh": f"{rel}/{a.mesh}",
        "files": [f"{rel}/{f}" for f in store.list_files(store.asset_dir(out_dir, a.aid))],
        "rotation": [list(r) for r in c.rotation] if c.rotation is not None else None,
        "dims_cm": dict(c.dims_cm) if c.dims_cm is not None else None,
        "n_vertices": info.n_vertices,
        "n_faces": info.n_faces,
        "extents": [round(x, 6) for x in info.extents],
        # `textured`: what the renderer will draw; `textured_mesh`: what the loaded mesh has (trimesh puts a
        # placeholder image on an OBJ whose MTL is missing), kept so a rerun's cache reproduces `textured`.
        "textured": info.textured and not a.missing,
        "textured_mesh": info.textured,
        "missing_files": list(a.missing),
    }


def label_and_split(rows: list[dict], hints: list[str | None], cfg: AcquireParams, seed: int) -> None:
    """Fill `label`, `group` and `split` in place (labels need the whole set: small classes are dropped)."""
    labels = assign_labels([raw_label(r["name"], h, cfg.labels) for r, h in zip(rows, hints)], cfg.labels)
    for r, lab in zip(rows, labels):
        r["label"] = lab
    objects = [split_object(r) for r in rows]
    groups = assign_groups(objects, cfg.split.group_by, cfg.split.max_family_size)
    splits = assign_splits(objects, groups, seed, cfg.split.validation_fraction, cfg.split.test_fraction)
    for r in rows:
        r["group"] = groups[r["asset_id"]][:16]
        r["split"] = splits[r["asset_id"]]


def _group_stats(rows: list[dict]) -> dict[str, int]:
    sizes = Counter(r["group"] for r in rows)
    merged = [s for s in sizes.values() if s > 1]
    return {
        "n_groups": len(sizes),
        "n_merged_groups": len(merged),
        "n_objects_in_merged_groups": sum(merged),
        "largest_group": max(sizes.values(), default=0),
    }


def _count(rows: Iterable[dict], key) -> dict[str, int]:
    return dict(sorted(Counter(key(r) for r in rows).items()))


@dataclass(frozen=True)
class AcquirePaths:
    """The paths dvc.yaml declares for the acquire stage."""

    out_dir: Path = Path("data/assets")


def run(
    cfg: AcquireParams, *, seed: int, paths: AcquirePaths = AcquirePaths(), progress: bool = True
) -> dict[str, Any]:
    """Collect assets from `cfg.sources` into `paths.out_dir`; return the stats (also written to stats.json)."""
    t0 = time.perf_counter()
    out_dir = Path(paths.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = _load_cache(out_dir)
    flt = _Filter(cfg)
    failures: list[dict] = []
    counters: Counter = Counter()
    filtered: Counter = Counter()

    cands: list[AssetCandidate] = []
    n_candidates: Counter[str] = Counter()
    for name in cfg.sources:
        for c in build_source(name, cfg).candidates():
            n_candidates[name] += 1
            if isinstance(c, ItemError):
                failures.append(_failure(c.item or name, c))
            elif (why := flt.reason(c)) is not None:
                filtered[why] += 1
            else:
                cands.append(c)
    t_enum = time.perf_counter()

    rows: list[dict] = []
    hints: list[str | None] = []
    seen: dict[str, str] = {}
    max_assets = cfg.filters.max_assets
    ordered = _ordered(cands, seed, max_assets)
    total = len(ordered) if max_assets is None else min(len(ordered), max_assets)
    # Candidates are staged in order and their meshes inspected concurrently; results are taken in the same order,
    # so rows, duplicates and failures are exactly those of a one-by-one pass. A candidate whose bytes equal one
    # still being inspected waits for that result first (it is a duplicate only if the first one is accepted).
    pending: deque[tuple[AssetCandidate, _Staged, Future]] = deque()
    workers = cfg.workers or os.cpu_count() or 1  # 0: one per CPU
    window = 4 * workers
    bar = tqdm(desc="acquire", unit="asset", total=total, disable=not progress)

    def accept(c: AssetCandidate, done: _Accepted) -> None:
        seen[done.aid] = c.item
        rows.append(_row(c, done, out_dir))
        hints.append(c.label_hint)

    def take_oldest() -> None:
        c, staged, fut = pending.popleft()
        bar.update()
        try:
            accept(c, _finish(staged, fut, out_dir, cfg, counters))
        except ItemError as err:
            failures.append(_failure(c.item, err))
        except OSError as err:
            failures.append(_failure(c.item, ItemError("io_error", f"{type(err).__name__}: {err}")))

    def settle(aid: str) -> None:
        while any(p.aid == aid for _, p, _ in pending):
            take_oldest()

    with _inspector(workers) as pool:
        for c in ordered:
            # with max_assets, every in-flight candidate may still be accepted: decide those first
            while pending and (
                len(pending) >= window or (max_assets is not None and len(rows) + len(pending) >= max_assets)
            ):
                take_oldest()
            if max_assets is not None and len(rows) >= max_assets:
                break
            try:
                done = _stage(c, out_dir, cache, seen, cfg, counters, settle)
            except ItemError as err:
                bar.update()
                failures.append(_failure(c.item, err))
                continue
            except OSError as err:  # disk/S3 read errors on one item must not stop the stage
                bar.update()
                failures.append(_failure(c.item, ItemError("io_error", f"{type(err).__name__}: {err}")))
                continue
            if isinstance(done, _Staged):
                pending.append((c, done, pool.submit(inspect_mesh, done.tmp / done.mesh)))
                continue
            bar.update()
            if done is not None:
                accept(c, done)
        while pending:
            take_oldest()
    bar.close()
    t_proc = time.perf_counter()

    label_and_split(rows, hints, cfg, seed)
    rows.sort(key=lambda r: r["asset_id"])
    write_jsonl_atomic(out_dir / FAILURES, failures)
    write_jsonl_atomic(out_dir / MANIFEST, rows)
    removed = store.garbage_collect(out_dir, {r["asset_id"] for r in rows})

    labelled = [r for r in rows if r["label"] is not None]
    stats = {
        "stage": STAGE,
        "validator_version": VALIDATOR_VERSION,
        "seed": seed,
        "n_assets": len(rows),
        "n_labelled": len(labelled),
        "n_labels": len({r["label"] for r in labelled}),
        "n_candidates": dict(n_candidates),
        "n_filtered": dict(sorted(filtered.items())),
        "n_failures": len(failures),
        "failures_by_reason": _count(failures, lambda f: f["error"]),
        "n_duplicates": counters["duplicates"],
        "n_extracted": counters["extracted"],
        "n_reused": counters["reused"],
        "n_store_removed": removed,
        "n_textured": sum(r["textured"] for r in rows),
        "by_source": _count(rows, lambda r: r["source"]),
        "by_category": _count(rows, lambda r: r["category"]),
        "n_with_missing_files": sum(bool(r["missing_files"]) for r in rows),
        "by_split": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "by_split_labelled": {s: sum(r["split"] == s for r in labelled) for s in SPLITS},
        "groups": _group_stats(rows),
        "by_label": _count(rows, lambda r: r["label"] or UNLABELLED),
        "by_label_split": {
            lab: _count((r for r in rows if (r["label"] or UNLABELLED) == lab), lambda r: r["split"])
            for lab in sorted({r["label"] or UNLABELLED for r in rows})
        },
        "timings_s": {
            "enumerate": round(t_enum - t0, 3),
            "process": round(t_proc - t_enum, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    }
    atomic_write_json(out_dir / STATS, stats)
    if not rows:
        raise RuntimeError(
            f"acquire: no usable asset from {cfg.sources} ({len(failures)} failures, "
            f"{sum(filtered.values())} filtered); see {out_dir / FAILURES}"
        )
    log.info(
        "acquire: %d assets (%d labelled in %d classes), %d failures, %.1f s",
        len(rows),
        len(labelled),
        stats["n_labels"],
        len(failures),
        stats["timings_s"]["total"],
    )
    return stats

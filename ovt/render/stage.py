"""The render stage: data/assets/manifest.jsonl + store -> data/renders/ (shards, manifest, failures, sheet).

run() = plan (shards + content keys) -> execute the missing shards (local worker processes, or a Dask cluster:
`render.executor`, ovt/render/executors.py) -> finalise (per-view manifest, failures report,
stats, contact sheet). Idempotent: complete shards are skipped by key; a killed run resumes per object.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ovt.io import atomic_write_json, read_jsonl, sha256_file, stable_digest, write_jsonl_atomic
from ovt.render.cameras import light_for_object, object_seed, sample_views
from ovt.render.config import RenderParams
from ovt.render.contact_sheet import make_contact_sheet
from ovt.render.shards import (
    ShardSpec,
    assemble_shard,
    completed_record,
    plan_shards,
    read_object_part,
    tar_path,
    work_dir,
    write_object_failure,
    write_object_part,
)
from ovt.render.worker import ObjectJob, RenderWorker, renderer_identity

log = logging.getLogger(__name__)

STAGE = "render"
_REQUIRED = ("asset_id", "mesh")


class RenderError(RuntimeError):
    """The stage as a whole cannot proceed (bad input, or nothing rendered at all)."""


# ---- inputs ----


def load_assets(assets_dir: Path, limit: int | None = None) -> list[dict]:
    """Acquire manifest rows (with `obj_id` = row index and `mesh_abs`), validated."""
    manifest = Path(assets_dir) / "manifest.jsonl"
    if not manifest.exists():
        raise RenderError(f"asset manifest not found: {manifest}")
    rows = read_jsonl(manifest)
    seen = set()
    for i, r in enumerate(rows):
        missing = [k for k in _REQUIRED if not r.get(k)]
        if missing:
            raise RenderError(f"{manifest}: row {i + 1} lacks {', '.join(missing)}")
        if r["asset_id"] in seen:
            raise RenderError(f"{manifest}: duplicate asset_id {r['asset_id']} (row {i + 1})")
        seen.add(r["asset_id"])
        r["obj_id"] = i
        r["mesh_abs"] = str((Path(assets_dir) / r["mesh"]).resolve())
    rows = rows[:limit] if limit else rows
    for r in rows:
        r["bytes_sha256"] = asset_bytes_digest(Path(assets_dir), r)
    return rows


def asset_bytes_digest(assets_dir: Path, row: dict) -> str:
    """Digest of the bytes of the mesh and every file the row lists (MTL, textures): part of the shard key, so an
    asset edited in place re-renders even if its id was not recomputed. Non-regular files (a FIFO, a missing file)
    are recorded as such rather than read: reading them here could block the planner; the worker reports them."""
    digests = {}
    for rel in sorted({row["mesh"], *(row.get("files") or [])}):
        p = assets_dir / rel
        digests[rel] = sha256_file(p) if p.is_file() else ("missing" if not p.exists() else "not-a-regular-file")
    return stable_digest(digests)


# ---- one shard ----


@dataclass(frozen=True)
class RenderJob:
    """Everything needed to render any shard of one run; small and picklable (ships to Dask workers)."""

    cfg_json: str
    seed: int
    shards_dir: str
    renderer: str

    @property
    def cfg(self) -> RenderParams:
        return RenderParams.model_validate_json(self.cfg_json)

    def object_job(self, cfg: RenderParams, asset: dict) -> ObjectJob:
        s = object_seed(self.seed, asset["asset_id"])
        return ObjectJob(
            asset["asset_id"], asset["mesh_abs"], asset.get("rotation"), sample_views(cfg, s), light_for_object(cfg, s)
        )

    def run_shard(
        self, spec: ShardSpec, worker: RenderWorker | None = None, on_object: Callable[[int], None] | None = None
    ) -> dict:
        """Render the objects of `spec` that have no part yet, then assemble the shard. Returns its counts."""
        cfg = self.cfg
        shards_dir = Path(self.shards_dir)
        if (rec := completed_record(shards_dir, spec)) is not None:
            return {
                "shard": spec.name,
                "skipped": True,
                "rendered": 0,
                "resumed": 0,
                "failed": len(rec["failures"]),
                "views": 0,
                "seconds": 0.0,
            }
        wdir = work_dir(shards_dir, spec)
        wdir.mkdir(parents=True, exist_ok=True)
        own = worker is None
        worker = worker or RenderWorker(cfg)
        rendered = resumed = failed = views = 0
        seconds = 0.0
        rows = []
        try:
            for asset in spec.assets:
                job = self.object_job(cfg, asset)
                rows += [_view_row(asset, v) for v in job.views]
                if read_object_part(wdir, asset["asset_id"]) is not None:
                    resumed += 1
                    continue
                res = worker.render(job)
                seconds += res.seconds
                if res.ok:
                    write_object_part(wdir, asset["asset_id"], _samples(asset, job, res, self.renderer))
                    rendered += 1
                    views += len(res.pngs)
                else:
                    log.warning("render failed for %s (%s): %s", asset["asset_id"], res.error, res.detail)
                    write_object_failure(
                        wdir,
                        asset["asset_id"],
                        {
                            "stage": STAGE,
                            "item": asset["asset_id"],
                            "error": res.error,
                            "detail": res.detail,
                            "name": asset.get("name"),
                            "mesh": asset.get("mesh"),
                        },
                    )
                    failed += 1
                if on_object:
                    on_object(len(res.pngs))
        finally:
            if own:
                worker.close()
        n_views = len(rows) // max(len(spec.assets), 1)
        assemble_shard(shards_dir, spec, rows, self.renderer, n_views)
        return {
            "shard": spec.name,
            "skipped": False,
            "rendered": rendered,
            "resumed": resumed,
            "failed": failed,
            "views": views,
            "seconds": seconds,
        }


def _view_row(asset: dict, v) -> dict:
    return {
        "key": f"{asset['asset_id']}_{v.index:03d}",
        "asset_id": asset["asset_id"],
        "view": v.index,
        "azimuth": v.azimuth,
        "elevation": v.elevation,
        "distance": v.distance,
        "fov": v.fov,
        "canonical": v.canonical,
    }


def _samples(asset: dict, job: ObjectJob, res, renderer: str) -> list[dict]:
    out = []
    for v, png, fg in zip(job.views, res.pngs, res.foreground):
        meta = _view_row(asset, v) | {
            "pose": [list(r) for r in v.pose],
            "light": job.light,
            "name": asset.get("name"),
            "category": asset.get("category"),
            "path": mvcap_path(asset["asset_id"], v.index),
            "renderer": renderer,
            "foreground": round(fg, 5),
        }
        out.append({"__key__": meta["key"], "png": png, "json": meta})
    return out


def mvcap_path(asset_id: str, view: int) -> str:
    return f"./views/{asset_id}/{view:03d}.png"


# ---- executors ----

ShardExecutor = Callable[[list[ShardSpec], RenderJob], list[dict]]


def local_executor(workers: int, progress: bool = True) -> ShardExecutor:
    """Lanes of (thread + its own worker process) pulling shards from a queue; the GL context lives per process."""

    def execute(specs: list[ShardSpec], job: RenderJob) -> list[dict]:
        if not specs:
            return []
        q: queue.Queue[ShardSpec] = queue.Queue()
        for s in specs:
            q.put(s)
        total = sum(len(s.assets) for s in specs)
        bar = tqdm(total=total, unit="obj", desc="render", disable=not progress, dynamic_ncols=True)
        lock, t0, done_views = threading.Lock(), time.perf_counter(), [0]

        def on_object(n_views: int) -> None:
            with lock:
                done_views[0] += n_views
                bar.update(1)
                bar.set_postfix(views_per_s=f"{done_views[0] / (time.perf_counter() - t0):.1f}", refresh=False)

        def lane() -> list[dict]:
            out: list[dict] = []
            with RenderWorker(job.cfg) as worker:
                while True:
                    try:
                        spec = q.get_nowait()
                    except queue.Empty:
                        return out
                    out.append(job.run_shard(spec, worker, on_object))

        n = max(1, min(workers, len(specs)))
        try:
            with ThreadPoolExecutor(n, thread_name_prefix="render-lane") as ex:
                futures = [ex.submit(lane) for _ in range(n)]
                return [r for f in futures for r in f.result()]
        finally:
            bar.close()

    return execute


# ---- the stage ----


def plan(
    cfg: RenderParams, *, seed: int, assets_dir: Path, out_dir: Path
) -> tuple[list[dict], list[ShardSpec], RenderJob]:
    rows = load_assets(assets_dir, cfg.limit)
    renderer = renderer_identity(cfg)
    specs = plan_shards(rows, cfg, seed, renderer)
    # absolute: the job travels to worker processes (Dask) whose working folder may differ
    job = RenderJob(cfg.model_dump_json(), seed, str((Path(out_dir) / "shards").resolve()), renderer)
    return rows, specs, job


def run(
    cfg: RenderParams,
    *,
    seed: int,
    assets_dir: str | Path,
    out_dir: str | Path,
    executor: ShardExecutor | None = None,
    progress: bool = True,
) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    shards_dir = out_dir / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    rows, specs, job = plan(cfg, seed=seed, assets_dir=Path(assets_dir), out_dir=out_dir)
    _remove_stale(shards_dir, specs)
    pending = [s for s in specs if completed_record(shards_dir, s) is None]
    log.info("render: %d assets, %d shards, %d to do (%s)", len(rows), len(specs), len(pending), job.renderer)
    t_plan = time.perf_counter()
    if executor is None:
        from ovt.render.executors import make_executor

        executor = make_executor(cfg, progress=progress, assets_dir=Path(assets_dir))
    results = executor(pending, job)
    t_exec = time.perf_counter()
    stats = finalise(cfg, rows, specs, out_dir, job.renderer)
    done = [r for r in results if not r["skipped"]]
    render_s = sum(r["seconds"] for r in done)
    stats |= {
        "shards_rendered": len(done),
        "shards_reused": len(specs) - len(done),
        "objects_rendered": sum(r["rendered"] for r in done),
        "objects_resumed": sum(r["resumed"] for r in done),
        "views_rendered": sum(r["views"] for r in done),
        "worker_seconds": round(render_s, 3),
        "views_per_worker_s": round(sum(r["views"] for r in done) / render_s, 2) if render_s else None,
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "timings_s": {
            "plan": round(t_plan - t0, 3),
            "execute": round(t_exec - t_plan, 3),
            "finalise": round(time.perf_counter() - t_exec, 3),
        },
    }
    atomic_write_json(out_dir / "stats.json", stats)
    if rows and stats["objects_ok"] == 0:
        raise RenderError(f"no asset rendered: all {len(rows)} failed (see {out_dir / 'failures.jsonl'})")
    return stats


def _remove_stale(shards_dir: Path, specs: list[ShardSpec]) -> None:
    """Shards beyond the plan (fewer assets now) and work folders of superseded keys."""
    names = {s.name for s in specs}
    for p in list(shards_dir.glob("shard-*.tar")) + list(shards_dir.glob("shard-*.json")):
        if p.stem not in names:
            p.unlink()
    live = {work_dir(shards_dir, s).name for s in specs}
    for w in (shards_dir / ".work").glob("*") if (shards_dir / ".work").exists() else []:
        if w.name not in live:
            shutil.rmtree(w, ignore_errors=True)


def finalise(cfg: RenderParams, rows: list[dict], specs: list[ShardSpec], out_dir: Path, renderer: str) -> dict:
    """Per-view manifest, failures report, contact sheet and base stats from the completion records."""
    shards_dir = out_dir / "shards"
    by_id = {r["asset_id"]: r for r in rows}
    manifest: list[dict] = []
    failures: list[dict] = []
    for spec in specs:
        rec = completed_record(shards_dir, spec)
        if rec is None:
            raise RenderError(f"{spec.name} is not complete after rendering")
        failures += rec["failures"]
        shard_rel = tar_path(shards_dir, spec).relative_to(out_dir).as_posix()
        for v in rec["rows"]:
            a = by_id[v["asset_id"]]
            manifest.append(
                v
                | {
                    "shard": shard_rel,
                    "obj_id": a["obj_id"],
                    "img_id": len(manifest),
                    "path": mvcap_path(v["asset_id"], v["view"]),
                    "split": a.get("split"),
                    "label": a.get("label"),
                    "name": a.get("name"),
                    "category": a.get("category"),
                }
            )
    write_jsonl_atomic(out_dir / "manifest.jsonl", manifest)
    write_jsonl_atomic(out_dir / "failures.jsonl", failures)
    if (shards_dir / ".work").exists() and not any((shards_dir / ".work").iterdir()):
        (shards_dir / ".work").rmdir()
    sheet = out_dir / "contact_sheet.png"
    cs = cfg.contact_sheet
    n_sheet = make_contact_sheet(
        out_dir, manifest, sheet, max_objects=cs.max_objects, max_views=cs.max_views, thumb=cs.thumb
    )
    n_ok = len({m["asset_id"] for m in manifest})
    return {
        "stage": STAGE,
        "backend": cfg.backend,
        "renderer": renderer,
        "assets": len(rows),
        "shards": len(specs),
        "objects_ok": n_ok,
        "objects_failed": len(failures),
        "views": len(manifest),
        "views_per_object": len(manifest) // n_ok if n_ok else 0,
        "canonical_views": sum(m["canonical"] for m in manifest),
        "contact_sheet_rows": n_sheet,
        "failures_by_error": _count(f["error"] for f in failures),
    }


def _count(items) -> dict:
    out: dict = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out

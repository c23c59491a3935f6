"""The caption stage: every complete render shard -> a caption side-car shard, then the MVCap export and stats.

Resumable per shard: a side-car is redone only when its completion record's content key differs from
digest(render shard key, captioner config, cleaning config, class vocabulary, joined asset rows, seed, version).
So a second run does nothing, and changing the prompt (or any caption/cleaning param) re-captions every shard.
The captioner (a VLM can take minutes to load) is built only when some shard needs work.

Failures never stop the stage: an unreadable view or an object the captioner fails on goes to the shard's
`shards/failures-NNNNN.jsonl`; a render shard that is incomplete or unreadable is reported for this run only.
`failures.jsonl`, `dropped.jsonl`, `mvcap/metadata.json` and `stats.json` are rebuilt every run from the up-to-date
side-cars. A shard with failures still counts as done (a rerun must do nothing); delete its
`shards/captions-NNNNN.json` to retry it.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from ovt.caption.base import Caption, Captioner, View
from ovt.caption.cleaning import Cleaner
from ovt.caption.config import CaptionParams
from ovt.caption.mvcap import MVCapRecord, write_metadata
from ovt.caption.shards import list_render_shards, load_manifest, view_from_sample
from ovt.io import atomic_write_bytes, atomic_write_json, read_jsonl, stable_digest, write_jsonl_atomic
from ovt.shards import Shard, iter_samples

log = logging.getLogger(__name__)

STAGE = "caption"
IMPL_VERSION = "caption-1"


def make_captioner(cfg: CaptionParams) -> Captioner:
    if cfg.backend == "template":
        from ovt.caption.template import TemplateCaptioner

        return TemplateCaptioner(cfg.template, guidance=cfg.guidance, guidance_fields=cfg.guidance_fields)
    from ovt.caption.vlm import VlmCaptioner

    return VlmCaptioner(cfg.vlm, guidance=cfg.guidance, guidance_fields=cfg.guidance_fields)


def view_seed(base_seed: int, key: str) -> int:
    """The architecture's per-item seed rule."""
    return int(stable_digest([base_seed, key])[:8], 16)


def captioner_config(cfg: CaptionParams) -> dict[str, Any]:
    """The part of the params that determines captions (only the active backend's block)."""
    backend_block = cfg.template if cfg.backend == "template" else cfg.vlm
    return {
        "backend": cfg.backend,
        "guidance": cfg.guidance,
        "guidance_fields": cfg.guidance_fields,
        cfg.backend: backend_block.model_dump(),
    }


def vocabulary(cfg: CaptionParams, assets: dict[str, dict], render_rows: dict[str, dict]) -> list[str]:
    rows = assets.values() if assets else render_rows.values()
    return sorted(
        {str(r[cfg.cleaning.consistency_field]).strip().lower() for r in rows if r.get(cfg.cleaning.consistency_field)}
    )


def _stem(shard: Shard) -> str:
    """NNNNN of the render shard: its caption side-cars reuse the number."""
    return f"{shard.index:05d}"


def shard_content_key(
    shard: Shard, cfg: CaptionParams, seed: int, vocab: list[str], asset_rows: list[dict | None]
) -> str:
    return stable_digest(
        {
            "impl": IMPL_VERSION,
            "render_shard_key": shard.key,
            "captioner": captioner_config(cfg),
            "cleaning": cfg.cleaning.model_dump(),
            "seed": seed,
            "vocabulary": vocab if cfg.cleaning.consistency_filter else None,
            "assets": stable_digest(asset_rows),
            "export_images": cfg.export_images,
        }
    )


def _paths(out_dir: Path, stem: str) -> dict[str, Path]:
    d = out_dir / "shards"
    return {
        "jsonl": d / f"captions-{stem}.jsonl",
        "json": d / f"captions-{stem}.json",
        "dropped": d / f"dropped-{stem}.jsonl",
        "failures": d / f"failures-{stem}.jsonl",
    }


def _is_done(paths: dict[str, Path], key: str) -> bool:
    try:
        rec = json.loads(paths["json"].read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return rec.get("key") == key and all(paths[k].exists() for k in ("jsonl", "dropped", "failures"))


def _fail(sink: list[dict], item: str, error: str, detail: str) -> None:
    """Record a per-item failure. Shard-level lists go into the shard's `failures-NNNNN.jsonl` (kept while the shard
    is up to date, so failures.jsonl, rebuilt every run, always lists every failure behind the current outputs)."""
    log.warning("caption failure %s: %s %s", item, error, detail)
    sink.append({"stage": STAGE, "item": item, "error": error, "detail": detail})


def _load_views(shard: Shard, render_rows: dict, assets: dict, failures: list[dict]) -> list[View]:
    views = []
    for key, members in iter_samples(shard.tar):
        try:
            png = members.get("png")
            if png is None:
                raise ValueError(f"sample {key!r} has no .png member")
            meta = json.loads(members["json"]) if "json" in members else {}
            render_row = render_rows.get(key)
            asset_id = (render_row or meta).get("asset_id") or key.rsplit("_", 1)[0]
            views.append(view_from_sample(key, png, meta, render_row, assets.get(asset_id)))
        except Exception as err:  # noqa: BLE001 - per-view failures are logged and skipped by contract
            _fail(failures, key, type(err).__name__, str(err))
    views.sort(key=lambda v: (v.asset_id, v.view))
    return views


def _caption_views(
    views: list[View], captioner: Captioner, seed: int, failures: list[dict]
) -> tuple[list[Caption], int]:
    """The whole shard in one call (so a VLM can fill batches across objects that share a prompt); if that fails,
    object by object, so one bad object costs its own views only (logged to failures.jsonl)."""
    seeds = [view_seed(seed, v.key) for v in views]
    try:
        return captioner.caption(views, seeds), 0
    except Exception as err:  # noqa: BLE001 - isolate below
        log.warning("captioning the shard in one call failed (%s); retrying object by object", err)
    captions: list[Caption] = []
    failed = 0
    by_asset: dict[str, list[int]] = {}
    for i, v in enumerate(views):
        by_asset.setdefault(v.asset_id, []).append(i)
    for asset_id, idx in by_asset.items():
        try:
            captions.extend(captioner.caption([views[i] for i in idx], [seeds[i] for i in idx]))
        except Exception as err:  # noqa: BLE001 - per-object failure, by contract logged and skipped
            failed += len(idx)
            for i in idx:
                _fail(failures, views[i].key, type(err).__name__, f"captioner failed on {asset_id}: {err}")
    return captions, failed


def caption_shard(
    shard: Shard,
    views: list[View],
    captioner: Captioner,
    cleaner: Cleaner,
    cfg: CaptionParams,
    seed: int,
    out_dir: Path,
    content_key: str,
    progress: Callable[[int], None],
    failures: list[dict],
) -> dict[str, Any]:
    """Caption, clean and write one shard's side-car (atomic files; the completion record last).

    `failures` holds the shard's earlier per-view failures (unreadable samples); captioner failures are added."""
    n_unreadable = len(failures)
    captions, failed = _caption_views(views, captioner, seed, failures)
    progress(len(views))
    view_by_key = {v.key: v for v in views}
    field = cfg.cleaning.consistency_field
    result = cleaner.clean(
        captions,
        [view_by_key[c.key].field_value(field) for c in captions],
        [view_by_key[c.key].asset_id for c in captions],
    )
    paths = _paths(out_dir, _stem(shard))
    if cfg.export_images:
        for c in result.kept:
            v = view_by_key[c.key]
            buf = io.BytesIO()
            v.image.save(buf, format="PNG")
            atomic_write_bytes(out_dir / "mvcap" / _rel(v), buf.getvalue())
    write_jsonl_atomic(paths["jsonl"], [c.to_row() for c in result.kept])
    write_jsonl_atomic(paths["dropped"], [{**d, "shard": _stem(shard)} for d in result.dropped])
    write_jsonl_atomic(paths["failures"], failures)
    record = {
        "key": content_key,
        "render_shard": shard.tar.name,
        "render_shard_key": shard.key,
        "n_views": len(views),
        "n_unreadable": n_unreadable,
        "n_captioned": len(captions),
        "n_failed": failed,
        "counts": dict(result.counts),
        "backend": cfg.backend,
        "model": getattr(captioner, "model", None),
        "model_version": getattr(captioner, "model_version", None),
    }
    atomic_write_json(paths["json"], record)
    return record


def _expected_views(record: dict) -> int:
    """For the progress bar only: the render record lists its rows, or gives views per object."""
    if isinstance(record.get("rows"), list):
        return len(record["rows"])
    return int(record.get("n_views") or 0) * len(record.get("assets") or [])


def _rel(v: View) -> str:
    return (v.path or f"./views/{v.asset_id}/{v.view:03d}.png").removeprefix("./")


def run(
    cfg: CaptionParams, *, seed: int, renders_dir: str | Path, assets_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Caption every complete render shard into `out_dir` (data/captions/); returns the stats (also stats.json)."""
    t0 = time.perf_counter()
    renders_dir, assets_dir, out_dir = Path(renders_dir), Path(assets_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards, incomplete = list_render_shards(renders_dir)
    if incomplete and not shards:
        raise RuntimeError(
            f"caption: no captions possible: none of the {len(incomplete)} render shard(s) under "
            f"{renders_dir / 'shards'} passes the shard integrity check (re-run the render stage)"
        )
    run_failures: list[dict] = []  # not tied to a captioned shard: rebuilt from scratch each run
    for tar in incomplete:
        _fail(run_failures, tar.name, "IncompleteShard", "no valid completion record beside the tar; skipped")
    render_rows = load_manifest(renders_dir / "manifest.jsonl", "key")
    assets = load_manifest(assets_dir / "manifest.jsonl", "asset_id")
    vocab = vocabulary(cfg, assets, render_rows)

    keys: dict[int, str] = {}
    todo: list[Shard] = []
    for shard in shards:
        shard_assets = sorted(set(shard.record.get("assets") or []))
        keys[shard.index] = shard_content_key(shard, cfg, seed, vocab, [assets.get(a) for a in shard_assets])
        if not _is_done(_paths(out_dir, _stem(shard)), keys[shard.index]):
            todo.append(shard)
    log.info(
        "caption: %d shards complete upstream, %d to caption, %d up to date",
        len(shards),
        len(todo),
        len(shards) - len(todo),
    )

    captioner = make_captioner(cfg) if todo else None
    cleaner = Cleaner(cfg.cleaning, vocab) if todo else None
    n_views_expected = sum(_expected_views(s.record) for s in todo) or None
    with tqdm(total=n_views_expected, desc="caption", unit="view", disable=not todo) as bar:
        for shard in todo:
            if captioner is None or cleaner is None:  # both are built above whenever a shard is to be captioned
                raise RuntimeError("caption: no captioner or cleaner for the shards to caption")
            try:
                shard_failures: list[dict] = []
                views = _load_views(shard, render_rows, assets, shard_failures)
                caption_shard(
                    shard, views, captioner, cleaner, cfg, seed, out_dir, keys[shard.index], bar.update, shard_failures
                )
            except Exception as err:  # noqa: BLE001 - a broken shard must not stop the others
                _fail(run_failures, shard.tar.name, type(err).__name__, str(err))

    stats = _finalise(out_dir, shards, keys, render_rows, vocab, cfg, run_failures)
    stats.update(
        {
            "shards_total": len(shards),
            "shards_captioned": len(todo),
            "shards_skipped_up_to_date": len(shards) - len(todo),
            "shards_incomplete_upstream": len(incomplete),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    atomic_write_json(out_dir / "stats.json", stats)
    if shards and stats["captions"] == 0:
        raise RuntimeError(
            f"caption: no captions produced from {len(shards)} render shard(s) ({stats['views']} "
            f"views; dropped by cleaning: {stats['dropped']}); see {out_dir / 'failures.jsonl'} and "
            f"{out_dir / 'dropped.jsonl'}"
        )
    return stats


def _finalise(
    out_dir: Path,
    shards: list[Shard],
    keys: dict[int, str],
    render_rows: dict,
    vocab: list[str],
    cfg: CaptionParams,
    run_failures: list[dict],
) -> dict[str, Any]:
    """Rebuild the stage-wide outputs from the up-to-date side-cars (cheap; always consistent with them)."""
    live = {_stem(s) for s in shards}
    for stale in (out_dir / "shards").glob("*-*.json*") if (out_dir / "shards").exists() else []:
        if stale.stem.split("-", 1)[-1] not in live:  # its render shard is gone: so must its captions be
            stale.unlink()
    records: list[MVCapRecord] = []
    dropped: list[dict] = []
    failures: list[dict] = list(run_failures)
    counts: Counter = Counter()
    n_views = 0
    for shard in shards:
        paths = _paths(out_dir, _stem(shard))
        if not _is_done(paths, keys[shard.index]):
            counts["shards_failed"] += 1
            continue
        rec = json.loads(paths["json"].read_text(encoding="utf-8"))
        n_views += rec["n_views"]
        counts.update(rec["counts"])
        counts["failed"] += rec["n_failed"]
        counts["unreadable"] += rec.get("n_unreadable", 0)
        dropped.extend(read_jsonl(paths["dropped"]))
        failures.extend(read_jsonl(paths["failures"]))
        for row in read_jsonl(paths["jsonl"]):
            r = render_rows.get(row["key"], {})
            asset_id, view = row["key"].rsplit("_", 1)
            records.append(
                MVCapRecord(
                    path=r.get("path") or f"./views/{asset_id}/{view}.png",
                    caption=row["caption"],
                    obj_id=_int_or(r.get("obj_id"), -1),
                    img_id=_int_or(r.get("img_id"), -1),
                    key=row["key"],
                )
            )
    write_metadata(out_dir / "mvcap" / "metadata.json", records)
    if not cfg.export_images:  # a previous run's exported images would no longer match the metadata
        shutil.rmtree(out_dir / "mvcap" / "views", ignore_errors=True)
    write_jsonl_atomic(out_dir / "dropped.jsonl", dropped)
    write_jsonl_atomic(out_dir / "failures.jsonl", failures)
    drops = {k.removeprefix("dropped_"): v for k, v in sorted(counts.items()) if k.startswith("dropped_")}
    return {
        "backend": cfg.backend,
        "guidance": cfg.guidance,
        "views": n_views,
        "captions": len(records),
        "dropped": drops,
        "dropped_total": sum(drops.values()),
        "truncated": counts["truncated"],
        "consistency_unchecked": counts["unchecked"],
        "captioner_failures": counts["failed"],
        "unreadable_views": counts["unreadable"],
        "failures": len(failures),
        "shards_failed": counts["shards_failed"],
        "vocabulary_size": len(vocab),
        "objects": len({r.obj_id for r in records}),
    }


def _int_or(value: Any, default: int) -> int:
    """Ids come from the render manifest; -1 marks a view the manifest does not list (never expected)."""
    return default if value is None else int(value)

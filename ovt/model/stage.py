"""The LiT bootstrap as a stage: render shards -> models/base/ (base.safetensors + base.json + metrics.json).

Idempotent: base.json records a content key over the input shards' keys, the params, the seed and the
implementation version; a rerun with the same key does nothing. Resumable: the frozen-tower features are cached per
shard (outside out_dir, which is replaced atomically as a whole), so a killed run restarts from its last shard.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ovt.io import atomic_dir, atomic_write_json, stable_digest, write_jsonl_atomic
from ovt.model import bootstrap, embedded
from ovt.model.config import BootstrapParams
from ovt.model.factory import BASE_JSON, BASE_WEIGHTS
from ovt.model.shards import list_shards, load_manifest

log = logging.getLogger(__name__)

METRICS = "metrics.json"
FAILURES = "failures.jsonl"


def stage_key(cfg: BootstrapParams, seed: int, shard_keys: list[str], manifest_sha: str | None) -> str:
    return stable_digest({"params": cfg.model_dump(mode="json"), "seed": seed, "shards": shard_keys,
                          "manifest": manifest_sha, "impl": bootstrap.IMPL_VERSION})


def run(cfg: BootstrapParams, *, seed: int, renders_dir: Path, out_dir: Path,
        cache_dir: Path | None = None, metrics_path: Path | None = None) -> dict:
    """Train the embedded base; `metrics_path` (optional) gets a copy of metrics.json outside out_dir, because DVC
    refuses a metrics file inside a directory output (overlapping outputs)."""
    renders_dir, out_dir = Path(renders_dir), Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir else out_dir.parent / ".cache" / f"{out_dir.name}-features"
    shards, incomplete = list_shards(renders_dir)
    if not shards:
        raise FileNotFoundError(f"no complete render shards under {renders_dir / 'shards'}")
    if incomplete:
        log.warning("skipping %d shard(s) without a completion record: %s", len(incomplete),
                    [p.name for p in incomplete])
    manifest, manifest_sha = load_manifest(renders_dir)
    key = stage_key(cfg, seed, [s.key for s in shards], manifest_sha)
    meta_path = out_dir / BASE_JSON
    if meta_path.is_file() and (out_dir / BASE_WEIGHTS).is_file():
        previous = json.loads(meta_path.read_text())
        if previous.get("key") == key:
            log.info("bootstrap up to date (%s)", key[:12])
            return {**previous.get("stats", {}), "skipped": True}

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    clip, tokenizer, preprocess = bootstrap.build_lit_model(cfg, seed)
    clip.eval()
    parts, failures, store = [], [], bootstrap.FeatureStore(cache_dir, cfg)
    for shard in tqdm(shards, desc="bootstrap features", leave=False):
        part, failed = bootstrap.shard_features(shard, clip.visual.trunk, preprocess, cfg, store, manifest)
        parts.append(part)
        failures.extend(failed)
    data = bootstrap.FeatureSet.concat(parts)
    t_feat = time.perf_counter() - t0
    train_set = data.select(lambda r: r["split"] == "train" and r["canonical"] and r["train_class"])
    acc_before = bootstrap.zero_shot_accuracy(clip, tokenizer, data, cfg)
    history = bootstrap.train(clip, tokenizer, train_set, cfg, seed)
    acc_after = bootstrap.zero_shot_accuracy(clip, tokenizer, data, cfg)
    t_total = time.perf_counter() - t0

    stats = {"n_shards": len(shards), "n_train_views": len(train_set.rows),
             "n_train_objects": len({r["asset_id"] for r in train_set.rows}),
             "n_train_classes": len({r["train_class"] for r in train_set.rows}),
             "n_failures": len(failures),
             "feature_s": round(t_feat, 2), "total_s": round(t_total, 2), **history,
             "zero_shot_before": acc_before, "zero_shot_after": acc_after}
    trained = bootstrap.export_trained(clip)
    metrics = {"loss_before": history["loss_before"], "loss_after": history["loss_after"],
               **{f"zero_shot_{k}": v for k, v in acc_after.items()}}
    with atomic_dir(out_dir) as tmp:
        save_file(trained, str(tmp / BASE_WEIGHTS))
        atomic_write_json(tmp / BASE_JSON, {
            "key": key, "impl": bootstrap.IMPL_VERSION, "seed": seed, "embed_dim": cfg.embed_dim,
            "image_size": cfg.image_size, "params": cfg.model_dump(mode="json"),
            "towers": embedded.model_description(cfg.embed_dim, cfg.image_size),
            "trained_keys": sorted(trained), "stats": stats})
        atomic_write_json(tmp / METRICS, metrics)
        write_jsonl_atomic(tmp / FAILURES, failures)
    if metrics_path is not None:
        atomic_write_json(metrics_path, metrics)
    log.info("bootstrap done in %.1fs: loss %.3f -> %.3f", t_total, history["loss_before"], history["loss_after"])
    return stats

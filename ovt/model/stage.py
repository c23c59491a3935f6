"""The LiT bootstrap as a stage: feature store + render manifest -> models/base/ (base.safetensors, base.json).

Idempotent: base.json records a content key over the feature records, the manifest, the params, the model block's
width and image size, the seed and the implementation version; a rerun with the same key does nothing. The image
side costs nothing here: pooled features come from the features stage.

Only the embedded base needs aligning. For any other architecture (an open_clip one with a pretrained tag is
already a CLIP; tiny-test and random towers are test fixtures) the stage writes a small marker saying it skipped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ovt.io import (
    atomic_dir,
    atomic_write_json,
    iter_jsonl,
    sha256_file,
    stable_digest,
    write_jsonl_atomic,
)
from ovt.model.config import EMBEDDED, BootstrapParams, ModelParams
from ovt.model.factory import BASE_JSON, BASE_WEIGHTS
from ovt.params_base import PROMPT_WORDS

log = logging.getLogger(__name__)

IMPL_VERSION = "lit-bootstrap-3"
METRICS = "metrics.json"
FAILURES = "failures.jsonl"


@dataclass(frozen=True)
class BootstrapPaths:
    renders_dir: Path = Path("data/renders")
    features_dir: Path = Path("data/features")
    out_dir: Path = Path("models/base")
    metrics: Path | None = Path("metrics/bootstrap.json")  # outside out_dir: DVC forbids a metric inside an output


def stage_key(cfg: BootstrapParams, model: ModelParams, seed: int, inputs: dict) -> str:
    from ovt.model.lit import embedded_size

    return stable_digest(
        {
            "params": cfg.model_dump(mode="json"),
            "model": embedded_size(model),
            "seed": seed,
            "inputs": inputs,
            "impl": IMPL_VERSION,
        }
    )


def _write(paths: BootstrapPaths, meta: dict, metrics: dict, weights: dict | None, failures: list[dict]) -> None:
    from safetensors.torch import save_file

    with atomic_dir(Path(paths.out_dir)) as tmp:
        if weights is not None:
            save_file(weights, str(tmp / BASE_WEIGHTS))
        atomic_write_json(tmp / BASE_JSON, meta)
        atomic_write_json(tmp / METRICS, metrics)
        write_jsonl_atomic(tmp / FAILURES, failures)
    if paths.metrics is not None:
        atomic_write_json(paths.metrics, metrics)


def _up_to_date(paths: BootstrapPaths, key: str, need_weights: bool) -> dict | None:
    out = Path(paths.out_dir)
    meta_path = out / BASE_JSON
    if not meta_path.is_file() or (need_weights and not (out / BASE_WEIGHTS).is_file()):
        return None
    previous = json.loads(meta_path.read_text())
    if previous.get("key") != key:
        return None
    if paths.metrics is not None and not Path(paths.metrics).is_file() and (out / METRICS).is_file():
        atomic_write_json(paths.metrics, json.loads((out / METRICS).read_text()))  # a lost copy is rewritten
    return previous


def run(
    cfg: BootstrapParams,
    *,
    model: ModelParams,
    seed: int,
    paths: BootstrapPaths = BootstrapPaths(),
    prompt_words: Mapping[str, str] = PROMPT_WORDS,
) -> dict:
    """Train the embedded base (or skip for other architectures); returns the stage's stats.

    `prompt_words` renames labels in the prompts (params.yaml `base.prompt_words`, shared with evaluate)."""
    if model.arch != EMBEDDED:
        reason = (
            f"{model.arch} / {model.pretrained}: a pretrained open_clip model is already aligned"
            if model.pretrained_open_clip
            else f"{model.arch}: only the {EMBEDDED!r} base is bootstrapped"
        )
        key = stable_digest({"skipped": model.arch, "pretrained": model.pretrained, "impl": IMPL_VERSION})
        if _up_to_date(paths, key, need_weights=False) is None:
            meta = {"key": key, "skipped": True, "reason": reason, "arch": model.arch, "pretrained": model.pretrained}
            _write(paths, meta, {"skipped": True}, None, [])
        log.info("bootstrap skipped: %s", reason)
        return {"skipped": True, "reason": reason}

    from ovt.features import open_store
    from ovt.model import embedded, lit

    manifest_path = Path(paths.renders_dir) / "manifest.jsonl"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: render manifest missing (run the render stage first)")
    store = open_store(paths.features_dir, model)
    records = sorted(store.folder.glob("shard-*.json"))
    if not records:
        raise FileNotFoundError(f"{store.folder}: no feature shards (run the features stage first)")
    inputs = {
        "manifest": sha256_file(manifest_path),
        "tower": store.folder.name,
        "features": stable_digest([json.loads(p.read_text())["key"] for p in records]),
    }
    key = stage_key(cfg, model, seed, {**inputs, "prompt_words": dict(sorted(prompt_words.items()))})
    if (previous := _up_to_date(paths, key, need_weights=True)) is not None:
        log.info("bootstrap up to date (%s)", key[:12])
        return {**previous.get("stats", {}), "skipped": True}

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    clip, tokenizer = lit.build_lit_model(cfg, model, seed)
    clip.eval()
    data, failures = lit.load_features(store, list(iter_jsonl(manifest_path)), cfg, prompt_words)
    t_feat = time.perf_counter() - t0
    train_set = data.select(lambda r: r["split"] == lit.TRAIN_SPLIT and r["canonical"] and r["train_class"])
    acc_before = lit.zero_shot_accuracy(clip, tokenizer, data, cfg)
    history = lit.train(clip, tokenizer, train_set, cfg, seed)
    acc_after = lit.zero_shot_accuracy(clip, tokenizer, data, cfg)
    t_total = time.perf_counter() - t0

    dim, size = lit.embedded_size(model)
    stats = {
        "n_train_views": len(train_set.rows),
        "n_train_objects": len({r["asset_id"] for r in train_set.rows}),
        "n_train_classes": len({r["train_class"] for r in train_set.rows}),
        "n_failures": len(failures),
        "feature_s": round(t_feat, 2),
        "total_s": round(t_total, 2),
        **history,
        "zero_shot_before": acc_before,
        "zero_shot_after": acc_after,
    }
    trained = lit.export_trained(clip)
    metrics = {
        "loss_before": history["loss_before"],
        "loss_after": history["loss_after"],
        **{f"zero_shot_{k}": v for k, v in acc_after.items()},
    }
    meta = {
        "key": key,
        "impl": IMPL_VERSION,
        "seed": seed,
        "embed_dim": dim,
        "image_size": size,
        "params": cfg.model_dump(mode="json"),
        "inputs": inputs,
        "towers": embedded.model_description(dim, size),
        "trained_keys": sorted(trained),
        "stats": stats,
    }
    _write(paths, meta, metrics, trained, failures)
    log.info("bootstrap done in %.1fs: loss %.3f -> %.3f", t_total, history["loss_before"], history["loss_after"])
    return stats

"""The features stage: run the frozen part of the image tower once over every rendered view.

Bootstrap (pooled features of canonical views), train (prefix activations of every training view) and evaluate
(every test view, for every model) used to run the same frozen computation three times; now each reads this store
and runs only its trainable tail. Resumable per render shard, O(shard) in memory.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from ovt import shards
from ovt.features.config import FeatureParams
from ovt.features.store import IMPL_VERSION, TOWER_JSON, entry_key, prefix_refusal, tower_fields, tower_key
from ovt.io import atomic_write_bytes, atomic_write_json, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturePaths:
    renders_dir: Path = Path("data/renders")
    out_dir: Path = Path("data/features")
    stats: Path | None = Path("metrics/features.json")  # outside out_dir: DVC forbids a metric inside an output


@dataclass
class FrozenTower:
    """The frozen computation of one model configuration: preprocessing, prefix and pooled output."""

    preprocess: Any
    split: Any
    first_adapted: int
    weights: dict

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, with_prefix: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        k = self.first_adapted
        h = self.split.prefix(images, k) if k >= 0 else images
        pooled = self.split.pooled(h, k)
        return (h if with_prefix else None), pooled


def weights_identity(model_cfg: Any) -> dict:
    """What identifies the frozen tower's weights, beyond the architecture name."""
    from ovt.model.config import EMBEDDED, TINY_TEST

    if model_cfg.arch == EMBEDDED:
        from ovt.model import embedded

        return {"efficientnet_lite0": sha256_file(embedded.efficientnet_weights_path())}
    if model_cfg.arch == TINY_TEST:
        return {"tiny-test": "seed-0"}
    p = model_cfg.pretrained
    return {"pretrained": sha256_file(p) if p and Path(p).is_file() else p}


def build_frozen_tower(model_cfg: Any) -> FrozenTower:
    """The OVT model's own split (so the first adapted block is found exactly as training finds it), with every
    adapter switched off: at scale 0 the tower is the frozen base."""
    from ovt.model import build_base, build_ovt_model

    model = build_ovt_model(model_cfg, build_base(model_cfg, None))
    model.set_adapter_scale(0.0)
    model.eval()
    return FrozenTower(model.preprocess, model.split, model.first_adapted, weights_identity(model_cfg))


def prefix_decision(tower: FrozenTower, probe_shape: tuple[int, ...], n_images: int, cfg: FeatureParams) -> dict:
    """Cache the prefix only when it saves compute (some frozen block runs below the first adapted one) and fits."""
    per_image = int(torch.tensor(probe_shape).prod()) * (2 if cfg.dtype == "float16" else 4)
    gib = per_image * n_images / 2**30
    reason = prefix_refusal(tower.first_adapted, per_image, n_images, cfg.max_prefix_gib, "features.max_prefix_gib")
    if reason:
        reason += "; training reads images instead"
    return {
        "prefix_cached": not reason,
        "prefix_reason": reason,
        "prefix_bytes_per_image": per_image,
        "prefix_gib": round(gib, 3),
    }


def run(
    cfg: FeatureParams, *, model: Any, seed: int, paths: FeaturePaths = FeaturePaths(), progress: bool = True
) -> dict:
    """Compute (or reuse) features for every complete render shard; returns stats (also `stats.json`)."""
    del seed  # the frozen pass is deterministic: no randomness to seed
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:  # the thread count is process-wide: give the caller back its own
        return _run(cfg, model=model, paths=paths, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: FeatureParams, *, model: Any, paths: FeaturePaths, progress: bool) -> dict:
    t0 = time.perf_counter()
    complete, incomplete = shards.list_shards(Path(paths.renders_dir) / "shards")
    if not complete:
        raise FileNotFoundError(f"no complete render shards under {paths.renders_dir}/shards")
    for tar in incomplete:
        log.warning("features: skipping %s (fails the shard integrity check)", tar.name)
    tower = build_frozen_tower(model)
    name = tower_key(model, tower.weights)
    folder = Path(paths.out_dir) / name
    manifest = Path(paths.renders_dir) / "manifest.jsonl"
    n_images = sum(1 for _ in open(manifest, encoding="utf-8")) if manifest.is_file() else 0
    probe = tower(torch.zeros(1, 3, *_image_hw(tower.preprocess)), True)[0]
    decision = prefix_decision(tower, tuple(probe.shape[1:]) if probe is not None else (0,), n_images, cfg)
    info = {
        "tower": name,
        "impl": IMPL_VERSION,
        "fields": json.loads(json.dumps(tower_fields(model))),
        "weights": tower.weights,
        "first_adapted": tower.first_adapted,
        "dtype": cfg.dtype,
        "prefix_shape": list(probe.shape[1:]) if probe is not None else None,
        **decision,
    }
    _drop_stale_towers(Path(paths.out_dir), info)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / TOWER_JSON, info)
    if decision["prefix_reason"]:
        log.warning("features: %s", decision["prefix_reason"])

    dtype = torch.float16 if cfg.dtype == "float16" else torch.float32
    done = computed = failed = 0
    bar = tqdm(total=len(complete), desc="features", unit="shard", disable=not progress)
    for shard in complete:
        key = entry_key(shard.key, name, f"{cfg.dtype}/{'prefix' if decision['prefix_cached'] else 'pooled'}")
        rec_path = folder / f"{shard.name}.json"
        if (
            rec_path.is_file()
            and json.loads(rec_path.read_text()).get("key") == key
            and (folder / f"{shard.name}.safetensors").is_file()
        ):
            done += 1
            bar.update(1)
            continue
        keys: list[str] = []
        pre_parts: list[torch.Tensor] = []
        pooled_parts: list[torch.Tensor] = []
        batch: list[torch.Tensor] = []
        batch_keys: list[str] = []

        def flush() -> None:
            if batch:
                pre, pooled = tower(torch.stack(batch), decision["prefix_cached"])
                if pre is not None:
                    pre_parts.append(pre.to(dtype))
                pooled_parts.append(pooled.float())
                keys.extend(batch_keys)
                batch.clear()
                batch_keys.clear()

        for skey, members in shards.iter_samples(shard.tar):
            try:
                batch.append(tower.preprocess(shards.decode_rgb(members["png"])))
                batch_keys.append(skey)
            except Exception as err:  # one unreadable view is a per-item failure: consumers report it missing
                failed += 1
                log.warning("features: %s/%s unreadable: %s", shard.name, skey, err)
                continue
            if len(batch) >= cfg.batch_size:
                flush()
        flush()
        tensors = {"pooled": torch.cat(pooled_parts).contiguous()} if pooled_parts else {}
        if pre_parts:
            tensors["prefix"] = torch.cat(pre_parts).contiguous()
        atomic_write_bytes(folder / f"{shard.name}.safetensors", safetensors_bytes(tensors))
        atomic_write_json(
            rec_path, {"key": key, "keys": keys, "render_shard": shard.tar.name, "render_key": shard.key}, indent=None
        )  # written last: the entry's commit
        computed += 1
        bar.update(1)
    bar.close()
    live = {s.name for s in complete}
    for stale in folder.glob("shard-*.json"):  # features of render shards that no longer exist
        if stale.stem not in live:
            stale.unlink()
            stale.with_suffix(".safetensors").unlink(missing_ok=True)
    stats = {
        "tower": name,
        "shards": len(complete),
        "shards_computed": computed,
        "shards_reused": done,
        "views_failed": failed,
        "incomplete_render_shards": len(incomplete),
        "n_images": n_images,
        **{k: v for k, v in info.items() if k.startswith("prefix") or k == "first_adapted"},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if paths.stats is not None:
        atomic_write_json(paths.stats, stats)
    log.info("features: %d shards computed, %d reused in %.1fs (tower %s)", computed, done, stats["seconds"], name)
    return stats


def _image_hw(preprocess: Any) -> tuple[int, int]:
    """The (H, W) the eval transform produces, read off a tiny probe image."""
    from PIL import Image

    t = preprocess(Image.new("RGB", (8, 8)))
    return int(t.shape[-2]), int(t.shape[-1])


def _drop_stale_towers(root: Path, info: dict) -> None:
    """Another folder for the same model fields holds features of other weights or code: it can never be read."""
    for other in root.glob(f"*/{TOWER_JSON}"):
        if other.parent.name == info["tower"]:
            continue
        prev = json.loads(other.read_text())
        if prev.get("fields") == info["fields"]:
            shutil.rmtree(other.parent)

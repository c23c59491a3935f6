"""The frozen-feature store: per render shard, the frozen image tower's outputs for every view.

Layout under `data/features/<tower>/` (`<tower>` = digest of everything that fixes the frozen computation: the
architecture and its weights, the image size, and where the first adapted block sits):
  tower.json              what the tower is (arch, weights, first adapted block, shapes, dtype)
  shard-NNNNN.safetensors `prefix` [n, ...] (input of the first adapted block; absent when not cached) and
                          `pooled` [n, D] (the frozen tower's pooled output, before its projection), rows in `keys` order
  shard-NNNNN.json        `{key, keys, render_shard, render_key}`, written last: the entry's commit

`key` = digest(render shard's content key, tower, dtype, implementation), so a re-render, a new tower or a new
dtype recomputes exactly the shards it changes, and a killed pass resumes at the first shard without a record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ovt.io import stable_digest

IMPL_VERSION = "features-1"
TOWER_JSON = "tower.json"


def prefix_refusal(first_adapted: int, per_image_bytes: int, n_images: int, max_gib: float, setting: str) -> str:
    """Why a prefix cache (the features stage's on disk, the trainer's in memory) must not be built, "" when it may:
    it would save no compute (no frozen block below the first adapted one) or would not fit under `setting`."""
    gib = per_image_bytes * n_images / 2**30
    if first_adapted <= 0:
        return "no frozen block below the first adapted one: caching the prefix would save no compute"
    if gib > max_gib:
        return f"the prefix would take {gib:.1f} GiB ({n_images} rows × {per_image_bytes} bytes) > {setting} {max_gib}"
    return ""


def tower_fields(model_cfg: Any) -> dict:
    """The model params that fix the frozen computation (LoRA rank or VIFormer do not: they live in the tail)."""
    lora = model_cfg.lora
    return {
        "arch": model_cfg.arch,
        "pretrained": model_cfg.pretrained,
        "image_size": model_cfg.image_size,
        "lora": {
            "enabled": lora.enabled,
            "placement": lora.placement,
            "last_blocks": lora.last_blocks,
            "targets": lora.targets,
        },
    }


def tower_key(model_cfg: Any, weights: dict | None = None) -> str:
    """Folder name of a frozen configuration. `weights` identifies the tower's weight files (embedded: sha256)."""
    return stable_digest({"impl": IMPL_VERSION, "tower": tower_fields(model_cfg), "weights": weights}, 16)


def entry_key(render_key: str, tower: str, dtype: str) -> str:
    return stable_digest({"impl": IMPL_VERSION, "render": render_key, "tower": tower, "dtype": dtype})


@dataclass
class FeatureStore:
    """Read side of one tower folder. `lookup(rows)` returns features in the order of the given manifest rows."""

    folder: Path
    info: dict
    _index: dict[str, dict] = field(default_factory=dict, repr=False)

    @property
    def has_prefix(self) -> bool:
        return bool(self.info.get("prefix_cached"))

    @property
    def first_adapted(self) -> int:
        return int(self.info["first_adapted"])

    def _record(self, shard_stem: str) -> dict:
        if shard_stem not in self._index:
            path = self.folder / f"{shard_stem}.json"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: no features for render shard {shard_stem} (run the features stage after the render stage)"
                )
            self._index[shard_stem] = json.loads(path.read_text())
        return self._index[shard_stem]

    def lookup(
        self, rows: Sequence[dict], *, prefix: bool = True, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(prefix [n, ...] or None, pooled [n, D]) for render-manifest rows (`key`, `shard`), in row order.

        Each needed shard file is read once; only the requested rows are kept, so memory is O(rows)."""
        from safetensors import safe_open

        want_prefix = prefix and self.has_prefix
        by_shard: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_shard.setdefault(Path(r["shard"]).stem, []).append(i)
        pre: torch.Tensor | None = None
        pooled: torch.Tensor | None = None
        for stem, idx in sorted(by_shard.items()):
            rec = self._record(stem)
            pos = {k: j for j, k in enumerate(rec["keys"])}
            missing = [rows[i]["key"] for i in idx if rows[i]["key"] not in pos]
            if missing:
                raise KeyError(
                    f"{self.folder / stem}: no features for view(s) {missing[:3]} "
                    f"({len(missing)} in all); the features stage is out of date"
                )
            take = torch.tensor([pos[rows[i]["key"]] for i in idx], dtype=torch.long)
            dest = torch.tensor(idx, dtype=torch.long)
            with safe_open(str(self.folder / f"{stem}.safetensors"), framework="pt") as fh:
                p = fh.get_tensor("pooled")[take].to(dtype)
                if pooled is None:
                    pooled = torch.empty((len(rows), *p.shape[1:]), dtype=dtype)
                pooled[dest] = p
                if want_prefix:
                    h = fh.get_tensor("prefix")[take].to(dtype)
                    if pre is None:
                        pre = torch.empty((len(rows), *h.shape[1:]), dtype=dtype)
                    pre[dest] = h
        if pooled is None:
            raise ValueError("FeatureStore.lookup: no rows")
        return pre, pooled


def open_store(root: str | Path, model_cfg: Any) -> FeatureStore:
    """The store for this model configuration; raises, naming the folder, when the features stage has not run."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"features folder not found: {root} (run the features stage first)")
    want = tower_fields(model_cfg)
    for info_path in sorted(root.glob(f"*/{TOWER_JSON}")):
        info = json.loads(info_path.read_text())
        if info.get("fields") == json.loads(json.dumps(want)):
            return FeatureStore(info_path.parent, info)
    raise FileNotFoundError(
        f"{root}: no features for the model configuration {want} (rerun the features stage with these model params)"
    )

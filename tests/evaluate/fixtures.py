"""Tiny on-disk fixtures: a render output folder (webdataset shards + manifest), an acquire manifest, saved
tiny-test models (through the real ovt.model save/load), and a procedural stand-in for the renderer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image, ImageDraw

from ovt.shards import write_record

CLASSES = ("chair", "lamp", "table")
SIZE = 32


def draw_view(label: str, azimuth: float, elevation: float, distance: float = 2.8, rgba: bool = False) -> Image.Image:
    """A class-coloured shape whose width follows the azimuth and height the elevation (a cheap 'render')."""
    colour = {"chair": (200, 40, 40), "lamp": (40, 200, 40), "table": (40, 40, 200)}[label]
    img = Image.new("RGBA" if rgba else "RGB", (SIZE, SIZE), (0, 0, 0, 0) if rgba else (255, 255, 255))
    d = ImageDraw.Draw(img)
    w = 4 + 10 * abs(np.cos(np.radians(azimuth))) * 2.8 / distance
    h = 4 + 10 * abs(np.cos(np.radians(elevation)))
    d.rectangle([16 - w, 16 - h, 16 + w, 16 + h], fill=colour + ((255,) if rgba else ()))
    return img


def make_renders(
    root: Path,
    n_per_class: int = 2,
    azimuths=(0.0, 90.0, 180.0),
    elevations=(10.0, 60.0),
    drop_key: str | None = None,
    test_split: str = "test",
) -> tuple[Path, Path]:
    """data/renders-like and data/assets-like folders; returns (renders_dir, assets_dir). `test_split` names the
    scored objects' split ("heldout" in older manifests)."""
    renders, assets = root / "renders", root / "assets"
    (renders / "shards").mkdir(parents=True)
    assets.mkdir(parents=True)
    asset_rows, view_rows = [], []
    i = 0
    for label in CLASSES:
        for k in range(n_per_class + 1):  # one extra object per class goes to the train split
            split = "train" if k == n_per_class else test_split
            asset_id = f"{i:02x}" + "ab" * 31
            asset_rows.append(
                {
                    "asset_id": asset_id,
                    "name": f"{label} {k}",
                    "label": label,
                    "split": split,
                    "category": "furniture",
                    "mesh": f"store/{asset_id}/m.obj",
                }
            )
            i += 1
    view_rows_by_shard: dict[str, list] = {}
    for n, a in enumerate(asset_rows):
        shard = f"shards/shard-{n // 4:05d}.tar"
        view = 0
        for el in elevations:
            for az in azimuths:
                key = f"{a['asset_id']}_{view:03d}"
                row = {
                    "key": key,
                    "shard": shard,
                    "asset_id": a["asset_id"],
                    "obj_id": n,
                    "view": view,
                    "img_id": len(view_rows),
                    "path": f"./views/{a['asset_id']}/{view:03d}.png",
                    "azimuth": az,
                    "elevation": el,
                    "distance": 2.8,
                    "fov": 40.0,
                    "canonical": bool(el <= 35 and abs(az) <= 60),
                    "split": a["split"],
                    "label": a["label"],
                    "name": a["name"],
                    "category": a["category"],
                }
                view_rows.append(row)
                view_rows_by_shard.setdefault(shard, []).append(row)
                view += 1
    for shard, rows in view_rows_by_shard.items():
        with wds.TarWriter(str(renders / shard)) as sink:
            for r in rows:
                if r["key"] == drop_key:
                    continue
                buf = io.BytesIO()
                draw_view(r["label"], r["azimuth"], r["elevation"], rgba=r["view"] % 2 == 1).save(buf, "PNG")
                sink.write({"__key__": r["key"], "png": buf.getvalue(), "json": json.dumps(r).encode()})
        write_record(renders / shard, {"key": "k", "n_views": len(rows)})
    (renders / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in view_rows))
    (assets / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in asset_rows))
    return renders, assets


def toy_render_view(asset_row: dict, azimuth: float, elevation: float, distance: float) -> Image.Image:
    return draw_view(asset_row["label"], azimuth, elevation, distance)


def tiny_model_cfg():
    """The tiny-test CLIP with LoRA on its last block only: a frozen block below it, so the prefix is stored."""
    from ovt.model import LoraParams, ModelParams, VIFormerParams

    return ModelParams(
        arch="tiny-test", lora=LoraParams(placement="qkv", last_blocks=1), viformer=VIFormerParams(heads=4, ffn=64)
    )


def make_features(renders: Path, out: Path, dtype: str = "float16") -> dict:
    """The features stage over the fixture renders, for the tiny models' frozen tower."""
    from ovt.features import FeatureParams, FeaturePaths, run

    return run(
        FeatureParams(dtype=dtype, batch_size=16),
        model=tiny_model_cfg(),
        seed=0,
        paths=FeaturePaths(renders_dir=renders, out_dir=out, stats=None),
        progress=False,
    )


def save_tiny_models(models_dir: Path, variants=("contrastive", "ovt")) -> None:
    """Saved OVT models on the tiny-test CLIP, LoRA weights randomised per variant (untrained, but distinct)."""
    import torch

    from ovt.model import build_base, build_ovt_model

    cfg = tiny_model_cfg()
    for s, v in enumerate(variants):
        model = build_ovt_model(cfg, build_base(cfg))
        g = torch.Generator().manual_seed(s)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name or "viformer" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        model.save(models_dir / v)

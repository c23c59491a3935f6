"""Tiny fixtures in the render/acquire contract formats (docs/architecture.md), written with webdataset's TarWriter."""

from __future__ import annotations

import io
import json
from pathlib import Path

import webdataset as wds
from PIL import Image, ImageDraw

from ovt.io import stable_digest
from ovt.shards import write_record

# (asset_id, name, category, label, tags, dims_cm, foreground colour)
ASSETS = [
    (
        "a1" * 8,
        "Corner sofa",
        "Living room",
        "sofa",
        ["couch", "seat"],
        {"width": 250, "depth": 200, "height": 80},
        (200, 30, 30),
    ),
    ("b2" * 8, "Desk lamp", "Lights", "lamp", ["light"], {"width": 15, "depth": 15, "height": 20}, (240, 220, 40)),
    (
        "c3" * 8,
        "Office chair",
        "Office",
        "chair",
        ["seat", "wheels"],
        {"width": 60, "depth": 60, "height": 110},
        (40, 80, 200),
    ),
    ("d4" * 8, "Teddy bear", "Miscellaneous", None, ["toy"], None, (120, 70, 30)),
]
# (azimuth, elevation) per view: front level, side high, back level, overhead
CAMERAS = [(0.0, 5.0), (90.0, 30.0), (180.0, 0.0), (-150.0, 80.0)]


def render_image(colour: tuple[int, int, int], view: int, size: int = 48) -> Image.Image:
    """A coloured shape on white whose size varies by view (so views differ)."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    u = size / 48
    m = round((8 + 2 * (view % 8)) * u)
    ImageDraw.Draw(img).rectangle([m, m, round(size - 8 * u), round(size - 10 * u)], fill=colour)
    return img


def asset_row(i: int, asset: tuple) -> dict:
    aid, name, category, label, tags, dims, _ = asset
    return {
        "asset_id": aid,
        "name": name,
        "category": category,
        "label": label,
        "tags": tags,
        "licence": "GPL",
        "creator": "eTeks",
        "source": "sweethome3d",
        "source_ref": f"ref/{i}",
        "split": "train",
        "mesh": f"store/{aid[:2]}/{aid}/model.obj",
        "files": [],
        "rotation": None,
        "dims_cm": dims,
        "n_vertices": 8,
        "n_faces": 12,
        "textured": False,
    }


def write_fixture(
    root: Path,
    assets=ASSETS,
    cameras=CAMERAS,
    objects_per_shard: int = 2,
    render_salt: str = "r1",
    image_size: int = 48,
) -> tuple[Path, Path]:
    """data/assets + data/renders under `root`; returns (assets_dir, renders_dir)."""
    assets_dir, renders_dir = root / "assets", root / "renders"
    (renders_dir / "shards").mkdir(parents=True, exist_ok=True)
    assets_dir.mkdir(parents=True, exist_ok=True)
    rows = [asset_row(i, a) for i, a in enumerate(assets)]
    (assets_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = []
    for s, start in enumerate(range(0, len(assets), objects_per_shard)):
        tar = renders_dir / "shards" / f"shard-{s:05d}.tar"
        ids = []
        with wds.TarWriter(str(tar)) as sink:
            for obj_id in range(start, min(start + objects_per_shard, len(assets))):
                aid, *_, colour = assets[obj_id]
                ids.append(aid)
                for v, (az, el) in enumerate(cameras):
                    key = f"{aid}_{v:03d}"
                    buf = io.BytesIO()
                    render_image(colour, v, image_size).save(buf, format="PNG")
                    meta = {
                        **rows[obj_id],
                        "view": v,
                        "azimuth": az,
                        "elevation": el,
                        "canonical": v == 0,
                        "pose": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.8], [0, 0, 0, 1]],
                        "light": {},
                    }
                    sink.write({"__key__": key, "png": buf.getvalue(), "json": json.dumps(meta).encode()})
                    manifest.append(
                        {
                            "key": key,
                            "shard": f"shards/{tar.name}",
                            "asset_id": aid,
                            "obj_id": obj_id,
                            "view": v,
                            "img_id": len(manifest),
                            "path": f"./views/{aid}/{v:03d}.png",
                            "azimuth": az,
                            "elevation": el,
                            "distance": 2.8,
                            "fov": 40.0,
                            "canonical": v == 0,
                            "split": "train",
                            "label": rows[obj_id]["label"],
                            "name": rows[obj_id]["name"],
                            "category": rows[obj_id]["category"],
                        }
                    )
        write_record(
            tar,
            {"key": stable_digest([render_salt, ids]), "assets": ids, "n_views": len(cameras), "renderer": "fixture"},
        )
    (renders_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest))
    return assets_dir, renders_dir

"""Tiny render shards in the render stage's format: coloured shapes per class, a few views per object."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image, ImageDraw

from ovt.shards import write_record

CLASSES = {"chair": (200, 30, 30), "lamp": (30, 30, 200), "table": (30, 160, 30)}


def _image(cls: str, view: int, size: int, rng: np.random.Generator) -> bytes:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))  # transparent background, like the renderer's RGBA
    d = ImageDraw.Draw(img)
    c = CLASSES[cls]
    jitter = int(rng.integers(-4, 5))
    box = (12 + jitter + view, 12 + jitter, size - 12 + jitter - view, size - 12 + jitter)
    {
        "chair": d.rectangle,
        "lamp": d.ellipse,
        "table": lambda b, fill: d.polygon([(b[0], b[3]), ((b[0] + b[2]) // 2, b[1]), (b[2], b[3])], fill=fill),
    }[cls](box, fill=c + (255,))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_render_fixture(
    renders_dir: Path,
    objects_per_class: int = 4,
    views: int = 4,
    size: int = 64,
    seed: int = 0,
    corrupt_one: bool = False,
    labels_in_manifest: bool = False,
) -> dict:
    """Objects of each class; the last of each class is held out. Views 0-1 canonical. Returns counts.

    labels_in_manifest: like the render stage, keep split/label out of the sample JSON and write them to
    renders/manifest.jsonl instead.
    """
    rng = np.random.default_rng(seed)
    shard_dir = Path(renders_dir) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    counts = {"train_canonical": 0, "heldout": 0}
    tar = shard_dir / "shard-00000.tar"
    manifest = []
    with wds.TarWriter(str(tar)) as sink:
        for ci, cls in enumerate(CLASSES):
            for o in range(objects_per_class):
                asset = f"{ci:02d}{o:02d}" + "a" * 60
                split = "heldout" if o == objects_per_class - 1 else "train"
                for v in range(views):
                    canonical = v < 2
                    meta = {
                        "asset_id": asset,
                        "name": f"{cls.title()} {o}",
                        "label": cls,
                        "split": split,
                        "canonical": canonical,
                        "view": v,
                        "category": "Misc",
                    }
                    manifest.append(
                        {
                            "key": f"{asset}_{v:03d}",
                            "shard": "shards/shard-00000.tar",
                            "asset_id": asset,
                            "view": v,
                            "canonical": canonical,
                            "split": split,
                            "label": cls,
                            "name": meta["name"],
                        }
                    )
                    if labels_in_manifest:
                        meta = {k: v_ for k, v_ in meta.items() if k not in ("split", "label")}
                    png = _image(cls, v, size, rng)
                    if corrupt_one and ci == 0 and o == 0 and v == 0:
                        png = b"not a png"
                    sink.write({"__key__": f"{asset}_{v:03d}", "png": png, "json": json.dumps(meta).encode()})
                    counts["train_canonical"] += split == "train" and canonical
                    counts["heldout"] += split == "heldout"
    if labels_in_manifest:
        (Path(renders_dir) / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest))
    write_record(shard_dir / "shard-00000.tar", {"key": f"fixture-{seed}-{objects_per_class}"})
    return counts

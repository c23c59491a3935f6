"""Contact sheet: a grid of objects (rows) x views (columns) read back from the shards, for people to look at."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from ovt.io import atomic_writer
from ovt.shards import SampleReader

_LABEL_W = 120


def _pick_views(views: list[dict], k: int) -> list[dict]:
    """Prefer the side views (poles last) starting at the front, so column 0 is the canonical front view."""
    side = sorted((v for v in views if abs(v["elevation"]) < 89), key=lambda v: (not v["canonical"], v["view"]))
    poles = [v for v in views if abs(v["elevation"]) >= 89]
    return (side + poles)[:k]


def _pick_objects(asset_ids: list[str], k: int) -> list[str]:
    """Spread the picks over the whole manifest instead of taking the first k ids."""
    if len(asset_ids) <= k:
        return asset_ids
    step = len(asset_ids) / k
    return [asset_ids[int(i * step)] for i in range(k)]


def make_contact_sheet(
    out_dir: Path, manifest: list[dict], dest: Path, *, max_objects: int = 12, max_views: int = 8, thumb: int = 96
) -> int:
    """Write the sheet to `dest` (atomic); returns the number of object rows drawn."""
    by_asset: dict[str, list[dict]] = defaultdict(list)
    for r in manifest:
        by_asset[r["asset_id"]].append(r)
    picks = _pick_objects(sorted(by_asset), max_objects)
    if not picks:
        return 0
    cells = {aid: _pick_views(by_asset[aid], max_views) for aid in picks}
    ncols = max(len(v) for v in cells.values())
    sheet = Image.new("RGB", (_LABEL_W + ncols * thumb, len(picks) * thumb), "white")
    draw = ImageDraw.Draw(sheet)
    reader = SampleReader()
    try:
        for row, aid in enumerate(picks):
            label = f"{by_asset[aid][0].get('name') or ''}\n{aid[:10]}"
            draw.multiline_text((4, row * thumb + 4), label, fill="black")
            for col, v in enumerate(cells[aid]):
                with Image.open(io.BytesIO(reader.read(out_dir / v["shard"], f"{v['key']}.png"))) as im:
                    tile = im.convert("RGBA")
                    tile.thumbnail((thumb, thumb))
                    bg = Image.new("RGBA", tile.size, (255, 255, 255, 255))  # transparent renders on white
                    sheet.paste(Image.alpha_composite(bg, tile).convert("RGB"), (_LABEL_W + col * thumb, row * thumb))
    finally:
        reader.close()
    with atomic_writer(dest) as fh:
        sheet.save(fh, format="PNG")
    return len(picks)

"""Human-facing summaries of a caption run: a seeded sample of captions for a few objects (by default 10 captions
for each of 3 objects), next to the run's stats, so a reader can judge caption quality without opening the shards."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ovt.io import read_jsonl


def sample_captions(
    captions_dir: str | Path, *, objects: int = 3, per_object: int = 10, seed: int = 0
) -> dict[str, Any]:
    """{"stats": stats.json, "objects": {asset_id: [{key, caption, prompt}, ...]}} from the side-car shards."""
    captions_dir = Path(captions_dir)
    by_asset: dict[str, list[dict]] = {}
    for side in sorted((captions_dir / "shards").glob("captions-*.jsonl")):
        for row in read_jsonl(side):
            by_asset.setdefault(row["key"].rsplit("_", 1)[0], []).append(row)
    rng = random.Random(seed)
    chosen = rng.sample(sorted(by_asset), min(objects, len(by_asset)))
    stats_path = captions_dir / "stats.json"
    return {
        "stats": json.loads(stats_path.read_text()) if stats_path.exists() else None,
        "objects": {
            a: [
                {"key": r["key"], "caption": r["caption"], "prompt": r["prompt"]}
                for r in sorted(by_asset[a], key=lambda r: r["key"])[:per_object]
            ]
            for a in chosen
        },
    }

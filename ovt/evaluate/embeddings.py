"""Image embeddings of the scored views, read from the frozen-feature store wherever it can stand in for the tower.

The features stage ran the frozen part of the image tower once over every rendered view. A tuned model then only
runs its tail on the stored prefix (the input of its first adapted block); the base (every adapter off) only needs
its projection of the stored pooled output. A full forward from the images remains the fallback: no store for this
model's tower, a store without a prefix, or views the store lacks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ovt.evaluate.scoring import embed_images

log = logging.getLogger(__name__)

IMAGES, PREFIX, POOLED = "images", "store:prefix", "store:pooled"


def head_from_pooled(model, pooled: torch.Tensor) -> torch.Tensor:
    """The image tower after its pooling: projection, then VIFormer (a no-op at adapter scale 0) or L2 norm,
    exactly as `image_tail` ends."""
    z = model.split.project(pooled)
    vf = getattr(model, "viformer", None)
    return vf(z) if vf is not None else F.normalize(z, dim=-1)


def open_model_store(features_dir: Path | None, model):
    """The feature store for this model's frozen tower, or None (logged) when there is none."""
    if features_dir is None or not hasattr(model, "cfg") or not hasattr(model, "split"):
        return None
    from ovt.features.store import open_store

    try:
        return open_store(Path(features_dir), model.cfg)
    except FileNotFoundError as err:
        log.warning("evaluate: no stored features for this model (%s): full forward from the images", err)
        return None


def store_route(store, model, frozen: bool) -> str:
    """Which stored tensor can replace the frozen tower for this model (IMAGES when none can)."""
    if store is None:
        return IMAGES
    if frozen:
        return POOLED
    if store.has_prefix and int(getattr(model, "first_adapted", -2)) == store.first_adapted:
        return PREFIX
    return IMAGES


@torch.no_grad()
def embed_views(
    model,
    rows: Sequence[dict],
    images: Callable[[], Sequence[Image.Image]],
    *,
    features_dir: Path | None,
    frozen: bool,
    batch_size: int,
    desc: str = "embed",
    progress: bool = True,
) -> tuple[np.ndarray, str]:
    """([N, D] float32 L2-normalised embeddings in row order, the route taken).

    `frozen`: every adapter of the model is off (the base), so its pooled output is the store's pooled output.
    `images()` is called only for the fallback."""
    store = open_model_store(features_dir, model)
    route = store_route(store, model, frozen)
    if route != IMAGES:
        try:
            out = []
            chunk = max(batch_size, 256)  # O(chunk) in memory: the store is read per chunk of rows
            for start in tqdm(range(0, len(rows), chunk), desc=desc, disable=not progress, unit="chunk"):
                prefix, pooled = store.lookup(rows[start : start + chunk], prefix=route == PREFIX)
                for i in range(0, len(pooled), batch_size):
                    if route == PREFIX:
                        z = model.image_tail(prefix[i : i + batch_size].to(model.device))
                    else:
                        z = head_from_pooled(model, pooled[i : i + batch_size].to(model.device))
                    out.append(F.normalize(z.float(), dim=-1).cpu().numpy())
            return np.concatenate(out), route
        except KeyError as err:  # views rendered after the features stage ran: a stale store, not a failure
            log.warning("evaluate: %s: full forward from the images instead", err)
    return embed_images(model, images(), batch_size=batch_size, desc=desc, progress=progress), IMAGES

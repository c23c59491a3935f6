"""Batched image embeddings with any model exposing the shared interface (preprocess, encode_image)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm


@torch.no_grad()
def embed_images(
    model, images: Sequence[Image.Image], *, batch_size: int, desc: str = "embed", progress: bool = True
) -> np.ndarray:
    """[N, D] float32 L2-normalised image embeddings, `batch_size` images per forward pass."""
    out: list[np.ndarray] = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, unit="batch"):
        batch = torch.stack([model.preprocess(im) for im in images[start : start + batch_size]])
        z = model.encode_image(batch).float()
        out.append(torch.nn.functional.normalize(z, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

"""Backend-independent image finishing: foreground measure, background compositing, PNG encoding."""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image


def foreground_fraction(rgba: np.ndarray) -> float:
    return float((rgba[..., 3] > 127).mean())


def composite(rgba: np.ndarray, background: tuple[float, float, float]) -> np.ndarray:
    """Straight-alpha RGBA over a solid background -> RGB uint8."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32) * 255.0
    return np.clip(rgba[..., :3] * a + bg * (1 - a) + 0.5, 0, 255).astype(np.uint8)


def encode_png(
    rgba: np.ndarray,
    *,
    transparent: bool,
    background: tuple[float, float, float],
    compress_level: int = 1,
    composited: bool = False,
) -> bytes:
    """`composited`: the RGB channels already lie over `background` (the gl backend clears to it)."""
    if transparent:
        img = rgba
    else:
        img = np.ascontiguousarray(rgba[..., :3]) if composited else composite(rgba, background)
    buf = io.BytesIO()
    # Z_RLE: renders are flat colour runs on a flat background; at level 1 it encodes ~15% faster than the default
    # strategy and the files come out ~10% smaller
    Image.fromarray(img, "RGBA" if transparent else "RGB").save(
        buf, format="PNG", compress_level=compress_level, compress_type=zlib.Z_RLE
    )
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy()

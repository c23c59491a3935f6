"""Backend-independent image finishing: foreground measure, background compositing, PNG encoding."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def foreground_fraction(rgba: np.ndarray) -> float:
    return float((rgba[..., 3] > 127).mean())


def composite(rgba: np.ndarray, background: tuple[float, float, float]) -> np.ndarray:
    """Straight-alpha RGBA over a solid background -> RGB uint8."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32) * 255.0
    return np.clip(rgba[..., :3] * a + bg * (1 - a) + 0.5, 0, 255).astype(np.uint8)


def encode_png(rgba: np.ndarray, *, transparent: bool, background: tuple[float, float, float],
               compress_level: int = 1) -> bytes:
    img = rgba if transparent else composite(rgba, background)
    buf = io.BytesIO()
    Image.fromarray(img, "RGBA" if transparent else "RGB").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A decoded render as 3-channel RGB for a model: transparent pixels composited onto `background` (the render
    stage's default white). Every consumer (bootstrap, train, evaluate) uses this one rule, so a transparent shard
    is seen the same way in training and in evaluation; a bare convert('RGB') would expose whatever colour the
    transparent pixels hold, usually black."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy()

"""Dominant foreground colours of a render, as plain colour names.

Foreground = pixels with alpha (RGBA renders), else pixels that differ from the background colour, estimated as
the median of the image border (renders are framed with margin, so the border is background). Each foreground
pixel is assigned the nearest named anchor in CIELAB (perceptual distance, so shading pulls "dark red" to red or
brown rather than to an RGB-nearest grey), and names covering enough of the foreground are reported by share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# A small vocabulary a caption reader understands; several anchors per name cover light/dark shades.
_ANCHORS: dict[str, list[tuple[int, int, int]]] = {
    "black": [(0, 0, 0), (35, 35, 35)],
    "grey": [(90, 90, 90), (128, 128, 128), (170, 170, 170)],
    "white": [(255, 255, 255), (222, 222, 222)],
    "red": [(200, 30, 30), (140, 20, 20), (230, 60, 50)],
    "orange": [(240, 130, 30), (210, 110, 40)],
    "yellow": [(240, 220, 40), (200, 180, 60)],
    "green": [(40, 160, 60), (30, 90, 40), (130, 190, 80)],
    "blue": [(40, 80, 200), (30, 40, 120), (100, 160, 220)],
    "purple": [(120, 50, 160), (80, 40, 110)],
    "pink": [(240, 140, 180), (220, 80, 150)],
    "brown": [(120, 70, 30), (80, 50, 25), (160, 110, 60)],
    "beige": [(220, 200, 160)],
}
_NAMES = [n for n, anchors in _ANCHORS.items() for _ in anchors]


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) -> CIELAB (D65) float (..., 3)."""
    c = rgb.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_ANCHOR_LAB = srgb_to_lab(np.array([a for anchors in _ANCHORS.values() for a in anchors], dtype=np.uint8))


# Nearest anchor per packed 24-bit colour, filled lazily (-1 = not computed yet). Renders reuse few colours within
# and across views, so each colour's Lab conversion and 30-anchor search runs once per process instead of once per
# pixel: the same answer per pixel, ~10x less work per caption. 16 MiB, allocated on first use.
_LUT: np.ndarray | None = None


def _nearest_lab(pixels: np.ndarray) -> np.ndarray:
    lab = srgb_to_lab(pixels)
    return np.argmin(((lab[:, None, :] - _ANCHOR_LAB[None, :, :]) ** 2).sum(-1), axis=1)


def nearest_anchor(pixels: np.ndarray) -> np.ndarray:
    """Index into _NAMES of the perceptually nearest anchor, per uint8 RGB pixel (N, 3)."""
    global _LUT
    if _LUT is None:
        _LUT = np.full(1 << 24, -1, dtype=np.int8)
    packed = (pixels[:, 0].astype(np.int32) << 16) | (pixels[:, 1].astype(np.int32) << 8) | pixels[:, 2]
    found = _LUT[packed]
    missing = found < 0
    if missing.any():
        new = np.unique(packed[missing])
        _LUT[new] = _nearest_lab(np.stack([new >> 16, (new >> 8) & 255, new & 255], axis=-1).astype(np.uint8))
        found = _LUT[packed]
    return found.astype(np.intp)


@dataclass(frozen=True)
class ColourSummary:
    names: list[str]  # dominant colour names, largest share first
    shares: dict[str, float]  # share of the foreground per name (all names present)
    foreground_fraction: float  # share of the image that is foreground


def foreground_mask(image: Image.Image, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 HxWx3, mask bool HxW). Alpha decides when present; else distance to the border median."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        return rgba[..., :3], rgba[..., 3] > 127
    rgb = np.asarray(image.convert("RGB"))
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    diff = np.abs(rgb.astype(np.int16) - background.astype(np.int16)).max(axis=-1)
    return rgb, diff > tolerance


def dominant_colours(
    image: Image.Image, *, max_colours: int = 2, min_share: float = 0.12, tolerance: int = 24, analysis_size: int = 96
) -> ColourSummary:
    img = image.copy()
    img.thumbnail((analysis_size, analysis_size), Image.Resampling.NEAREST)  # nearest: no blended edge colours
    rgb, mask = foreground_mask(img, tolerance)
    pixels = rgb[mask]
    if len(pixels) == 0:
        return ColourSummary([], {}, 0.0)
    nearest = nearest_anchor(pixels)
    counts: dict[str, int] = {}
    for idx, n in zip(*np.unique(nearest, return_counts=True)):
        counts[_NAMES[idx]] = counts.get(_NAMES[idx], 0) + int(n)
    total = float(len(pixels))
    shares = {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
    names = [k for k, s in shares.items() if s >= min_share][:max_colours]
    return ColourSummary(names, shares, float(mask.mean()))

"""Viewpoint words from the camera's azimuth/elevation.

Convention (docs/architecture.md, canonical frame): Y up, the asset's front faces +Z, so a camera at azimuth 0°
looks at the front; |azimuth| = 180° looks at the back. Elevation is the camera's angle above the object's
horizontal plane (negative: below). The bands are deliberately coarse: captions should state what a viewer would
agree on, not a number.
"""

from __future__ import annotations

from dataclasses import dataclass


def wrap_azimuth(azimuth: float) -> float:
    """Map any angle in degrees to (-180, 180]."""
    a = (float(azimuth) + 180.0) % 360.0 - 180.0
    return 180.0 if a == -180.0 else a


@dataclass(frozen=True)
class ViewWords:
    side: str  # "front" | "side" | "back" | "top" | "bottom"
    height: str  # "level" | "above" | "high" | "below" | "overhead" | "underneath"
    phrase: str  # e.g. "seen from the back, from above"


def side_word(azimuth: float) -> str:
    a = abs(wrap_azimuth(azimuth))
    if a <= 45.0:
        return "front"
    if a < 135.0:
        return "side"
    return "back"


def height_word(elevation: float) -> str:
    e = float(elevation)
    if e >= 75.0:
        return "overhead"  # looking straight down: front/back no longer meaningful
    if e >= 40.0:
        return "above"
    if e >= 15.0:
        return "high"
    if e > -15.0:
        return "level"
    if e > -75.0:
        return "below"
    return "underneath"


_SIDE_PHRASE = {"front": "from the front", "side": "from the side", "back": "from the back"}
_HEIGHT_PHRASE = {"above": "from above", "high": "from slightly above", "level": "at eye level", "below": "from below"}


def view_words(azimuth: float, elevation: float) -> ViewWords:
    side, height = side_word(azimuth), height_word(elevation)
    if height == "overhead":
        return ViewWords("top", height, "seen from directly above")
    if height == "underneath":
        return ViewWords("bottom", height, "seen from directly below")
    return ViewWords(side, height, f"seen {_SIDE_PHRASE[side]}, {_HEIGHT_PHRASE[height]}")

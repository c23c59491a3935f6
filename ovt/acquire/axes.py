"""Orientation of a raw mesh: which of its axes is up and which is front, as the manifest's `rotation`.

The canonical frame is Y up, front facing +Z (Sweet Home 3D and glTF). `rotation` is the 3x3 row-major matrix R
with canonical = R @ raw; the renderer applies it before centring, so the view it tags canonical (the front) is the
front the CSV named. Rows of R are the raw axes that become canonical X, Y, Z: right = up x front, up, front.

When only `up` is given, the front is the one a plain tilt brings to +Z (the usual export convention: Z-up files,
as written by Blender or CAD tools, face -Y).
"""

from __future__ import annotations

import numpy as np

from ovt.acquire.candidate import ItemError

AXES = {"x": (1, 0, 0), "y": (0, 1, 0), "z": (0, 0, 1)}
_DEFAULT_FRONT = {"x": "z", "-x": "z", "y": "z", "-y": "-z", "z": "-y", "-z": "y"}


def parse_axis(text: str, what: str) -> np.ndarray:
    t = text.strip().lower().lstrip("+")
    sign = -1.0 if t.startswith("-") else 1.0
    axis = AXES.get(t.lstrip("-"))
    if axis is None or t.count("-") > 1:
        raise ItemError("bad_csv", f"{what} {text!r} is not one of x, y, z, -x, -y, -z")
    return sign * np.asarray(axis, dtype=float)


def axes_rotation(up: str, front: str | None) -> tuple[tuple[float, ...], ...]:
    """R mapping raw -> canonical for a mesh whose `up` and `front` raw axes are given (front defaults as above)."""
    u = parse_axis(up, "up")
    if front is None or not front.strip():
        front = _DEFAULT_FRONT[up.strip().lower().lstrip("+")]
    f = parse_axis(front, "front")
    if abs(float(u @ f)) > 0.5:
        raise ItemError("bad_csv", f"up {up!r} and front {front!r} are not perpendicular")
    r = np.stack([np.cross(u, f), u, f])
    return tuple(tuple(float(x) + 0.0 for x in row) for row in r)


def parse_rotation(text: str) -> tuple[tuple[float, ...], ...]:
    """Nine numbers (3x3 row-major, separated by spaces or semicolons) that form a proper rotation."""
    try:
        vals = [float(t) for t in text.replace(";", " ").replace(",", " ").split()]
    except ValueError:
        raise ItemError("bad_csv", f"rotation {text!r}: not numbers") from None
    r = np.asarray(vals, dtype=float)
    if r.size != 9 or not np.isfinite(r).all():
        raise ItemError("bad_csv", f"rotation {text!r}: need 9 finite numbers (3x3 row-major)")
    r = r.reshape(3, 3)
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-3) or np.linalg.det(r) <= 0:
        raise ItemError("bad_csv", f"rotation {text!r}: not a proper rotation (orthonormal, determinant +1)")
    return tuple(tuple(float(x) for x in row) for row in r)

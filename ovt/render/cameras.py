"""Camera sampling: pure numpy functions, deterministic per object.

Conventions (shared by both backends):
- Canonical object frame: Y up, front facing +Z (Sweet Home 3D / glTF). Azimuth 0 looks at the front, i.e. the
  camera sits on +Z; positive azimuth moves the camera towards +X. Elevation is positive above the object.
- Poses are 4x4 camera-to-world matrices in the OpenGL camera convention (camera looks down its -Z, +Y is image up),
  which is also Blender's camera convention, so both backends consume the same matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ovt.io import stable_digest
from ovt.render.config import CanonicalRange, RenderParams, Ring

_GOLDEN = (1 + 5**0.5) / 2


@dataclass(frozen=True)
class View:
    index: int
    azimuth: float  # degrees in (-180, 180]
    elevation: float  # degrees in [-90, 90]
    distance: float
    fov: float  # vertical, degrees
    canonical: bool
    pose: tuple[tuple[float, ...], ...]  # 4x4 camera-to-world, row-major

    def as_dict(self) -> dict:
        d = asdict(self)
        d["pose"] = [list(r) for r in self.pose]
        return d


def object_seed(base_seed: int, asset_id: str) -> int:
    """Per-item seed as the architecture prescribes: a re-render of the same asset gets the same cameras/lights."""
    return int(stable_digest([base_seed, asset_id])[:8], 16)


def wrap_azimuth(az: np.ndarray | float) -> np.ndarray:
    """Map degrees into (-180, 180]."""
    a = np.mod(np.asarray(az, dtype=float) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)


def direction(azimuth: np.ndarray | float, elevation: np.ndarray | float) -> np.ndarray:
    """Unit vectors from the object centre towards the camera, shape (..., 3)."""
    az, el = np.radians(azimuth), np.radians(elevation)
    return np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], axis=-1)


def angles(dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `direction`: (azimuth, elevation) in degrees of unit vectors (..., 3)."""
    d = np.asarray(dirs, dtype=float)
    el = np.degrees(np.arcsin(np.clip(d[..., 1], -1, 1)))
    az = np.degrees(np.arctan2(d[..., 0], d[..., 2]))
    # at the poles the azimuth is undefined: report 0 rather than arctan2 noise
    az = np.where(np.abs(el) > 90 - 1e-6, 0.0, az)
    return wrap_azimuth(az), el


def look_at_pose(eye: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 for a camera at `eye` looking at the origin with world +Y as up.

    Straight above/below, +Y is parallel to the view axis; there the image-up is the back (-Z) when looking down
    and the front (+Z) when looking up, so the object's front is at the bottom of the top view.
    """
    eye = np.asarray(eye, dtype=float)
    back = eye / np.linalg.norm(eye)  # camera +Z (it looks down -Z)
    up = np.array([0.0, 1.0, 0.0])
    if abs(back @ up) > 1 - 1e-9:
        up = np.array([0.0, 0.0, -1.0]) if back[1] > 0 else np.array([0.0, 0.0, 1.0])
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, back, eye
    return pose


def is_canonical(azimuth: np.ndarray | float, elevation: np.ndarray | float, rng: CanonicalRange) -> np.ndarray:
    eps = 1e-6  # ring angles like 60.0 come out of float maths as 59.99999999
    az, el = np.abs(wrap_azimuth(azimuth)), np.asarray(elevation, dtype=float)
    return (el >= rng.elevation[0] - eps) & (el <= rng.elevation[1] + eps) & (az <= rng.max_abs_azimuth + eps)


# ---- direction samplers: each returns (n, 3) unit vectors ----


def _random_rotation_about_y(rng: np.random.Generator) -> np.ndarray:
    """The seeded offset of the low-discrepancy samplers: a random spin about the up axis keeps the hemisphere
    constraint intact while decorrelating the pattern between objects."""
    t = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _from_height_and_angle(y: np.ndarray, phi: np.ndarray) -> np.ndarray:
    r = np.sqrt(np.clip(1 - y**2, 0, 1))
    return np.stack([r * np.sin(phi), y, r * np.cos(phi)], axis=-1)


def _heights(u: np.ndarray, upper: bool) -> np.ndarray:
    """Map u in [0,1) to heights (sin elevation) equal-area: uniform in y is uniform on the sphere (Archimedes)."""
    return u if upper else 2 * u - 1


def fibonacci_directions(n: int, rng: np.random.Generator, upper: bool = False) -> np.ndarray:
    u = (np.arange(n) + 0.5) / n
    phi = 2 * np.pi * np.arange(n) / _GOLDEN
    return _from_height_and_angle(_heights(u, upper), phi) @ _random_rotation_about_y(rng).T


def _radical_inverse_base2(i: np.ndarray) -> np.ndarray:
    out = np.zeros(i.shape, dtype=float)
    f, k = 0.5, i.astype(np.int64).copy()
    while np.any(k):
        out += f * (k & 1)
        k >>= 1
        f /= 2
    return out


def hammersley_directions(n: int, rng: np.random.Generator, upper: bool = False) -> np.ndarray:
    """Hammersley points with a seeded Cranley-Patterson shift (as in TRELLIS's renderer), mapped equal-area."""
    i = np.arange(n)
    shift = rng.uniform(0, 1, size=2)
    u = np.mod(i / n + shift[0], 1.0)
    v = np.mod(_radical_inverse_base2(i) + shift[1], 1.0)
    return _from_height_and_angle(_heights(u, upper), 2 * np.pi * v)


def uniform_directions(n: int, rng: np.random.Generator, upper: bool = False) -> np.ndarray:
    return _from_height_and_angle(_heights(rng.uniform(0, 1, size=n), upper), rng.uniform(0, 2 * np.pi, size=n))


def ring_angles(rings: tuple[Ring, ...], poles: bool, upper: bool) -> tuple[np.ndarray, np.ndarray]:
    az, el = [], []
    for r in rings:
        if upper and r.elevation < 0:
            continue
        a = r.azimuth_offset + 360.0 * np.arange(r.n_azimuth) / r.n_azimuth
        az.extend(a.tolist())
        el.extend([r.elevation] * r.n_azimuth)
    if poles:
        az.append(0.0)
        el.append(90.0)
        if not upper:
            az.append(0.0)
            el.append(-90.0)
    return wrap_azimuth(np.array(az, dtype=float)), np.array(el, dtype=float)


def sample_views(cfg: RenderParams, seed: int) -> list[View]:
    """All views of one object. `seed` is the object's seed (`object_seed`); same seed -> identical views."""
    rng = np.random.default_rng(seed)
    upper = cfg.hemisphere == "upper"
    if cfg.view_sampler == "rings":
        az, el = ring_angles(cfg.rings, cfg.poles, upper)
    else:
        fn = {"fibonacci": fibonacci_directions, "hammersley": hammersley_directions, "uniform": uniform_directions}[
            cfg.view_sampler
        ]
        az, el = angles(fn(cfg.n_views, rng, upper))
    n = len(az)
    if n == 0:
        raise ValueError("the view sampler produced no views (all rings below an upper hemisphere?)")
    # distances and FOVs are drawn after the directions so that fixed ranges leave the directions unchanged
    dist = rng.uniform(*cfg.distance, size=n) if cfg.distance[0] < cfg.distance[1] else np.full(n, cfg.distance[0])
    fov = rng.uniform(*cfg.fov_deg, size=n) if cfg.fov_deg[0] < cfg.fov_deg[1] else np.full(n, cfg.fov_deg[0])
    canon = is_canonical(az, el, cfg.canonical)
    dirs = direction(az, el)
    views = []
    for i in range(n):
        pose = look_at_pose(dirs[i] * dist[i])
        views.append(
            View(
                index=i,
                azimuth=round(float(az[i]), 6),
                elevation=round(float(el[i]), 6),
                distance=float(dist[i]),
                fov=float(fov[i]),
                canonical=bool(canon[i]),
                pose=tuple(tuple(float(x) for x in row) for row in pose),
            )
        )
    return views


def light_for_object(cfg: RenderParams, seed: int) -> dict:
    """Seeded per-object jitter of the key light; returns the direction the light travels FROM (unit, world)."""
    rng = np.random.default_rng([seed, 1])  # its own stream: adding views must not change the lighting
    lp = cfg.light
    az = lp.azimuth + rng.uniform(-lp.jitter_deg, lp.jitter_deg)
    el = float(np.clip(lp.elevation + rng.uniform(-lp.jitter_deg, lp.jitter_deg), -89.0, 89.0))
    k = lp.key * (1 + rng.uniform(-lp.intensity_jitter, lp.intensity_jitter))
    return {
        "direction": direction(az, el).round(6).tolist(),
        "azimuth": round(float(az), 4),
        "elevation": round(el, 4),
        "key": round(float(k), 6),
        "ambient": lp.ambient,
    }

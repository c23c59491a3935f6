"""The renderer in the loop for the worst-case viewpoint search: one GL view of one asset at a given pose.

It reuses the render stage's pieces (mesh normalisation, camera pose, seeded per-object light, compositing), so a
searched view at a rendered pose reproduces that held-out render. The GL context lives in this process: the search
renders a handful of views per object, so no worker process is worth its start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the render package is imported lazily, after torch's compiler stack (see __init__)
    from ovt.render.normalize import NormalisedMesh


class GLViewRenderer:
    """Callable `(asset_row, azimuth, elevation, distance) -> PIL.Image` for `ovt.evaluate.worst_case`."""

    def __init__(self, render_cfg, assets_dir: Path, seed: int):
        # torch's compiler stack (triton) and Mesa's llvmpipe each load their own LLVM: importing triton after an
        # EGL context exists crashes the process (SIGSEGV), so it is loaded first (the scored models need it anyway).
        import torch._dynamo  # noqa: F401

        from ovt.render.gl import GLRenderer

        if render_cfg.backend != "gl":
            raise ValueError(
                f"the worst-view search needs the fast gl backend, render.backend is {render_cfg.backend!r}"
            )
        self.cfg, self.assets_dir, self.seed = render_cfg, Path(assets_dir), seed
        self.gl = GLRenderer(render_cfg.image_size, render_cfg.msaa)
        self._mesh_key: str | None = None
        self._mesh: NormalisedMesh | None = None
        self._light: dict | None = None

    def _load(self, asset_row: dict) -> None:
        # The search queries one object many times in a row: keep its normalised mesh until the next object.
        from ovt.render.cameras import light_for_object, object_seed
        from ovt.render.normalize import load_normalised

        if asset_row["asset_id"] != self._mesh_key:
            self._mesh = load_normalised(self.assets_dir / asset_row["mesh"], asset_row.get("rotation"))
            self._light = light_for_object(self.cfg, object_seed(self.seed, asset_row["asset_id"]))
            self._mesh_key = asset_row["asset_id"]

    def __call__(self, asset_row: dict, azimuth: float, elevation: float, distance: float) -> Image.Image:
        from ovt.render.cameras import View, direction, is_canonical, look_at_pose
        from ovt.render.images import composite

        self._load(asset_row)
        mesh, light = self._mesh, self._light
        if mesh is None or light is None:  # _load() has set both
            raise RuntimeError(f"no mesh loaded for {asset_row['asset_id']}")
        pose = look_at_pose(direction(azimuth, elevation) * distance)
        fov = float(np.mean(self.cfg.fov_deg))
        view = View(
            index=0,
            azimuth=float(azimuth),
            elevation=float(elevation),
            distance=float(distance),
            fov=fov,
            canonical=bool(is_canonical(azimuth, elevation, self.cfg.canonical)),
            pose=tuple(tuple(float(x) for x in row) for row in pose),
        )
        rgba = self.gl.render(mesh, [view], light)[0]
        return Image.fromarray(composite(rgba, self.cfg.background), "RGB")

    def close(self) -> None:
        self.gl.close()


def make_render_view(render_cfg, assets_dir: Path, seed: int) -> GLViewRenderer | None:
    """The search's renderer, or None (logged) where no GL context can be made: the stage then skips the search
    instead of failing, and says so in stats.json (`search: false`)."""
    import logging

    try:
        return GLViewRenderer(render_cfg, assets_dir, seed)
    except Exception as err:  # no EGL, no moderngl, blender backend: all mean "no search", not "no evaluation"
        logging.getLogger(__name__).warning("worst-view search disabled: %s: %s", type(err).__name__, err)
        return None

"""Render stage: cameras, normalisation, gl + blender backends, webdataset shards.

Kept import-free on purpose: `ovt.render.normalize` is also imported inside the bpy interpreter (numpy 1.26, no
pydantic), which must not pull in the rest of the package. Import submodules directly; `run` imports lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RenderPaths:
    """The paths dvc.yaml declares for the render stage."""

    assets_dir: Path = Path("data/assets")
    out_dir: Path = Path("data/renders")


def run(params, *, seed: int, paths: RenderPaths = RenderPaths()) -> dict:
    """The render stage (`ovt.render.stage.run`) on `params` (the `render:` block)."""
    import importlib  # by name, like the lazy exports: importing the package must not load the stage

    run_stage = importlib.import_module("ovt.render.stage").run

    return run_stage(params, seed=seed, assets_dir=paths.assets_dir, out_dir=paths.out_dir)

"""The `blender` backend: bpy 5.0.1 Cycles on CPU, one subprocess per object with a timeout.

Why a subprocess: bpy lives in its own interpreter (it pins numpy 1.26), a Cycles crash must not take the stage
down, and a hang is ended by killing the process after `object_timeout_s`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ovt.render.cameras import View

_WORKER = Path(__file__).with_name("blender_worker.py")
_REPO_ROOT = Path(__file__).resolve().parents[2]
# what the worker imports itself: OBJ/PLY/STL through bpy's importers, glTF through its glTF importer
_WORKER_FORMATS = frozenset({".obj", ".ply", ".stl", ".glb", ".gltf"})


def to_glb(mesh_path: Path, out_dir: str | os.PathLike) -> Path:
    """Any other format (COLLADA left Blender in 5.0) as the GLB of the scene trimesh reads, converted here: the
    bpy interpreter lacks the readers (pycollada) this one has, and both the worker's normalisation and its import
    then read the same GLB."""
    from ovt.render.normalize import load_scene

    out = Path(out_dir) / "converted.glb"
    load_scene(mesh_path).export(out)
    return out


class BlenderUnavailable(RuntimeError):
    """No interpreter with bpy at the configured path."""


class BlenderRenderer:
    name = "blender"

    def __init__(
        self, python: str | os.PathLike, size: int, samples: int = 16, threads: int = 0, timeout_s: float = 600.0
    ):
        self.python = Path(python)
        if not self.python.exists():
            raise BlenderUnavailable(
                f"blender python not found: {self.python} (set render.blender.python or "
                f"$OVT_BLENDER_PYTHON to an interpreter with bpy==5.0.1)"
            )
        self.size, self.samples, self.threads, self.timeout_s = size, samples, threads, timeout_s
        self._version: str | None = None

    @property
    def version(self) -> str:
        if self._version is None:
            out = subprocess.run(
                [str(self.python), "-c", "import bpy; print(bpy.app.version_string)"],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            self._version = f"bpy {out.stdout.strip().splitlines()[-1]}; cycles cpu"
        return self._version

    def render_file(self, mesh_path: str | os.PathLike, rotation, views: list[View], light: dict) -> list[np.ndarray]:
        """Render every view of one mesh file; RGBA uint8 (straight alpha), rows top-to-bottom."""
        with tempfile.TemporaryDirectory(prefix="ovt-blender-") as tmp:
            mesh = Path(mesh_path).resolve()
            if mesh.suffix.lower() not in _WORKER_FORMATS:
                mesh = to_glb(mesh, tmp)
            job = {
                "repo_root": str(_REPO_ROOT),
                "mesh": str(mesh),
                "rotation": rotation,
                "size": self.size,
                "samples": self.samples,
                "threads": self.threads,
                "light": light,
                "views": [{"pose": [list(r) for r in v.pose], "fov": v.fov, "distance": v.distance} for v in views],
                "out_dir": tmp,
            }
            job_path = Path(tmp) / "job.json"
            job_path.write_text(json.dumps(job))
            try:
                proc = subprocess.run(
                    [str(self.python), str(_WORKER), str(job_path)],
                    capture_output=True,
                    text=True,
                    timeout=self.timeout_s,
                )
            except subprocess.TimeoutExpired as e:
                raise TimeoutError(f"blender worker exceeded {self.timeout_s:.0f} s") from e
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout)[-1500:]
                raise RuntimeError(f"blender worker exited with {proc.returncode}: {tail}")
            out = []
            for i in range(len(views)):
                p = Path(tmp) / f"{i:03d}.png"
                if not p.exists():
                    raise RuntimeError(f"blender worker wrote no image for view {i}")
                with Image.open(p) as im:
                    out.append(np.asarray(im.convert("RGBA"), dtype=np.uint8).copy())
            return out

    def close(self) -> None:
        pass

"""Benchmark: refusing an over-sized mesh from its declared face count vs. after a full trimesh parse.

Writes a flat OBJ grid (and the same mesh as binary PLY) with `--faces` triangles, then times
`ovt.acquire.validate.check_declared` (what the stage runs before anything is written or parsed) against
`inspect_mesh` (the full load it replaces for such a mesh), with peak RSS growth of each. Prints the numbers and
writes benchmarks/results/acquire_face_precheck.json.

    python benchmarks/acquire_face_precheck.py [--faces 2000000] [--max-faces 250000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from ovt.acquire.candidate import ItemError
from ovt.acquire.validate import check_declared, inspect_mesh


def grid(n_faces: int):
    side = max(1, int((n_faces / 2) ** 0.5))
    i, j = np.meshgrid(np.arange(side + 1), np.arange(side + 1), indexing="ij")
    verts = np.stack([i.ravel(), j.ravel(), 0.01 * ((i * j) % 3).ravel()], axis=1).astype(float)
    idx = (np.arange(side)[:, None] * (side + 1) + np.arange(side)[None, :]).ravel()
    a, b, c, d = idx, idx + side + 1, idx + side + 2, idx + 1
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return verts, faces


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn) -> tuple[float, str]:
    t = time.perf_counter()
    try:
        fn()
        outcome = "accepted"
    except ItemError as err:
        outcome = err.reason
    return time.perf_counter() - t, outcome


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=2_000_000)
    ap.add_argument("--max-faces", type=int, default=250_000)
    args = ap.parse_args()
    import trimesh

    verts, faces = grid(args.faces)
    load_before = os.getloadavg()[0]
    result: dict = {"faces": int(len(faces)), "max_faces": args.max_faces}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("obj", "ply"):
            path = Path(tmp) / f"grid.{fmt}"
            trimesh.Trimesh(verts, faces, process=False).export(path)
            data = path.read_bytes()
            pre_s, pre_outcome = _time(lambda: check_declared(path.name, data, args.max_faces))
            rss0 = _rss_mib()
            full_s, full_outcome = _time(lambda: inspect_mesh(path))
            result[fmt] = {
                "file_mib": round(len(data) / 2**20, 1),
                "precheck_s": round(pre_s, 4),
                "precheck_outcome": pre_outcome,
                "full_load_s": round(full_s, 3),
                "full_load_outcome": full_outcome,
                "full_load_peak_rss_growth_mib": round(max(0.0, _rss_mib() - rss0), 1),
            }
    dest = Path(__file__).parent / "results" / "acquire_face_precheck.json"
    write_result(dest, result, load_before=load_before)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()

"""A folder of real, small meshes in every supported format plus hostile and broken rows, as a user would bring.

`build(root)` writes the folder and its assets.csv and returns {csv path: expected outcome}, where the outcome is
"ok" or a failure reason. Run `python -m tests.acquire.mixed_folder` to build one in a temporary folder, run the
acquire stage on it with the `local` source and print the accept/reject counts by reason.
"""

from __future__ import annotations

import io
import random
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from tests.acquire.fixtures import cube_obj, grid_obj, png_bytes

MAX_FACES = 5000


def dae_bytes(image_ref: str | None, size: float = 1.0) -> bytes:
    """A textured box written with pycollada (Collada 1.4.1), its diffuse map pointing at `image_ref`."""
    import collada
    import trimesh
    from collada import geometry, material, scene, source

    doc = collada.Collada()
    box = trimesh.creation.box(extents=(size, size * 2, size / 2))
    if image_ref is not None:
        img = material.CImage("img0", image_ref)
        surface = material.Surface("surf0", img)
        sampler = material.Sampler2D("samp0", surface)
        effect = material.Effect("eff0", [surface, sampler], "phong", diffuse=material.Map(sampler, "UVSET0"))
        doc.images.append(img)
    else:
        effect = material.Effect("eff0", [], "phong", diffuse=(0.8, 0.2, 0.2))
    mat = material.Material("mat0", "mat", effect)
    doc.effects.append(effect)
    doc.materials.append(mat)
    uv = np.tile([[0, 0], [1, 0], [1, 1], [0, 1]], (2, 1)).astype(float)
    srcs = [
        source.FloatSource("v", box.vertices.astype(float).ravel(), ("X", "Y", "Z")),
        source.FloatSource("n", box.vertex_normals.astype(float).ravel(), ("X", "Y", "Z")),
        source.FloatSource("uv", uv.ravel(), ("S", "T")),
    ]
    geom = geometry.Geometry(doc, "g0", "box", srcs)
    inputs = source.InputList()
    inputs.addInput(0, "VERTEX", "#v")
    inputs.addInput(0, "NORMAL", "#n")
    inputs.addInput(0, "TEXCOORD", "#uv")
    geom.primitives.append(geom.createTriangleSet(box.faces.astype(np.int32).ravel(), inputs, "matref"))
    doc.geometries.append(geom)
    node = scene.Node("node0", children=[scene.GeometryNode(geom, [scene.MaterialNode("matref", mat, inputs=[])])])
    doc.scenes.append(scene.Scene("scene0", [node]))
    doc.scene = doc.scenes[0]
    buf = io.BytesIO()
    doc.write(buf)
    return buf.getvalue()


def _export(mesh, fmt: str) -> bytes:
    data = mesh.export(file_type=fmt)
    return data.encode() if isinstance(data, str) else data


def build(root: Path) -> dict[str, str]:
    """Write the mixed folder under `root`; return {csv path: "ok" | expected failure reason}."""
    import trimesh

    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    files: dict[str, bytes | str] = {}
    rows: list[tuple[str, str, str]] = []  # (path, category, extra csv columns "name,up,front,rotation")
    expect: dict[str, str] = {}

    def add(path: str, outcome: str, category: str = "Misc", extra: str = ",,,") -> None:
        rows.append((path, category, extra))
        expect[path] = outcome

    # --- good meshes -----------------------------------------------------------------------------------------
    files["chairs/red/red.obj"] = cube_obj(size=1.1, mtl="red.mtl", textured=True)
    files["chairs/red/red.mtl"] = "newmtl m\nKd 1 1 1\nmap_Kd tex/red.png\n"
    files["chairs/red/tex/red.png"] = png_bytes()
    add("chairs/red/red.obj", "ok", "Seats", "Red chair,,,")
    files["lego/lego.obj"] = cube_obj(size=1.2, mtl="lego.mtl", textured=True)  # MTL missing
    add("lego/lego.obj", "ok", "Toys")
    files["table/table.obj"] = cube_obj(size=1.3, mtl="table.mtl", textured=True)
    files["table/table.mtl"] = "newmtl m\nKd 1 1 1\nmap_Kd table.tga\n"  # texture missing
    add("table/table.obj", "ok", "Tables")
    files["shared/cube.png"] = png_bytes((20, 200, 20))
    files["sib/sib.obj"] = cube_obj(size=1.4, mtl="sib.mtl", textured=True)
    files["sib/sib.mtl"] = "newmtl m\nKd 1 1 1\nmap_Kd ../shared/cube.png\n"  # sibling, inside root
    add("sib/sib.obj", "ok", "Boxes")
    files["abs/abs.obj"] = cube_obj(size=1.5, mtl="abs.mtl", textured=True)
    files["abs/abs.mtl"] = (
        "newmtl m\nKd 1 1 1\nmap_Kd C:/images/textures/wood/tree.jpg\n"
        "newmtl n\nmap_Kd /home/carlos/modelos3d/jacuzzi/normal_map.jpg\n"
    )  # absolute paths
    add("abs/abs.obj", "ok", "Tables")
    files["duck/duck.dae"] = dae_bytes("duck.png")
    files["duck/duck.png"] = png_bytes((250, 220, 0))
    add("duck/duck.dae", "ok", "Toys")
    files["duck2/duck2.dae"] = dae_bytes("../shared/cube.png", size=1.6)
    add("duck2/duck2.dae", "ok", "Toys")
    box = trimesh.creation.box(extents=(1.0, 1.7, 0.6))
    files["formats/box.glb"] = _export(box, "glb")
    add("formats/box.glb", "ok")
    for name, data in trimesh.creation.box(extents=(1.0, 1.8, 0.6)).export(file_type="gltf").items():
        files[f"formats/gltf/{name}"] = data
    add("formats/gltf/model.gltf", "ok")
    files["formats/box.ply"] = _export(trimesh.creation.box(extents=(1.0, 1.9, 0.6)), "ply")
    add("formats/box.ply", "ok")
    files["formats/box.stl"] = _export(trimesh.creation.box(extents=(1.0, 2.0, 0.6)), "stl")
    add("formats/box.stl", "ok")
    files["formats/ascii.stl"] = _export(trimesh.creation.box(extents=(1.0, 2.1, 0.6)), "stl_ascii")
    add("formats/ascii.stl", "ok")
    files["formats/box.off"] = _export(trimesh.creation.box(extents=(1.0, 2.2, 0.6)), "off")
    add("formats/box.off", "ok")
    tall = trimesh.creation.box(extents=(0.5, 0.6, 3.0))  # tall along Z: a Z-up model
    files["zup/tower.obj"] = _export(tall, "obj")
    add("zup/tower.obj", "ok", "Towers", "Z-up tower,z,,")
    files["zup/tower_rot.ply"] = _export(trimesh.creation.box(extents=(0.5, 0.7, 3.0)), "ply")
    add("zup/tower_rot.ply", "ok", "Towers", 'Rotated tower,,,"1 0 0 0 0 1 0 -1 0"')

    # --- broken and hostile rows -----------------------------------------------------------------------------
    add("../outside.obj", "unsafe_path")
    files["evil/evil.obj"] = cube_obj(size=2.5, mtl="evil.mtl", textured=True)
    files["evil/evil.mtl"] = "newmtl m\nmap_Kd ../../../../etc/passwd\n"
    add("evil/evil.obj", "unsafe_path")
    files["evil/lib.obj"] = "mtllib ../../secret.mtl\n" + cube_obj(size=2.6)
    add("evil/lib.obj", "unsafe_path")
    files["bad/nan.obj"] = "v nan 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 2 3 4\n"
    add("bad/nan.obj", "nan_vertices")
    files["bad/garbage.obj"] = rng.randbytes(4096)
    add("bad/garbage.obj", "unparseable")
    files["bad/garbage.glb"] = b"glTF" + rng.randbytes(2048)
    add("bad/garbage.glb", "unparseable")
    files["bad/garbage.ply"] = b"ply\nformat ascii 1.0\nelement vertex 3\n" + rng.randbytes(512)
    add("bad/garbage.ply", "unparseable")
    files["bad/empty.obj"] = "# nothing here\n"
    add("bad/empty.obj", "no_faces")
    files["bad/points.obj"] = "v 0 0 0\nv 1 0 0\nv 0 1 0\n"
    add("bad/points.obj", "no_faces")
    files["bad/huge.obj"] = grid_obj(60)  # 7200 triangles > MAX_FACES
    add("bad/huge.obj", "too_many_faces")
    files["bad/huge.ply"] = _export(trimesh.creation.icosphere(subdivisions=5), "ply")  # 20480 faces
    add("bad/huge.ply", "too_many_faces")
    files["bad/model.3mf"] = b"PK\x03\x04"
    add("bad/model.3mf", "unsupported_format")
    add("bad/absent.obj", "missing_file")
    add("zup/tower.obj#bad-axis", "bad_csv", "Towers", "Bad axis,w,,")

    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    (root.parent / "outside.obj").write_text(cube_obj(size=3.0))
    (root.parent / "secret.mtl").write_text("newmtl m\nKd 1 0 0\n")
    (root / "bad" / "link.obj").symlink_to(root.parent / "outside.obj")  # a symlink leaving the root
    add("bad/link.obj", "unsafe_path")

    lines = ["path,category,name,up,front,rotation"]
    for path, category, extra in rows:
        path = path.split("#", 1)[0]
        lines.append(f"{path},{category},{extra}")
    (root / "assets.csv").write_text("\n".join(lines) + "\n")
    return expect


def run_folder(root: Path, out_dir: Path) -> dict:
    from ovt.acquire.config import AcquireParams
    from ovt.acquire.stage import AcquirePaths, run

    cfg = AcquireParams(
        sources=["local"], local={"root": str(root)}, filters={"max_faces": MAX_FACES}, labels={"min_per_class": 2}
    )
    return run(cfg, seed=0, paths=AcquirePaths(out_dir), progress=False)


def main() -> None:
    from ovt.io import read_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder" / "meshes"
        expect = build(root)
        stats = run_folder(root, Path(tmp) / "out")
        rows = read_jsonl(Path(tmp) / "out" / "manifest.jsonl")
        failures = read_jsonl(Path(tmp) / "out" / "failures.jsonl")
    print(f"rows in the CSV: {len(expect)}  (expected: {sum(v == 'ok' for v in expect.values())} accepted)")
    print(
        f"accepted: {stats['n_assets']}  ({sum(r['textured'] for r in rows)} textured, "
        f"{sum(bool(r['missing_files']) for r in rows)} with missing/absolute references drawn untextured, "
        f"{sum(r['rotation'] is not None for r in rows)} with an orientation from the CSV)"
    )
    print(f"rejected: {len(failures)}")
    for reason, n in sorted(Counter(f["error"] for f in failures).items()):
        print(f"  {reason:<20} {n}")
    for r in rows:
        if r["missing_files"]:
            print(f"  warning: {r['source_ref']}: untextured, missing {r['missing_files']}")


if __name__ == "__main__":
    main()

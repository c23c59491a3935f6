"""The local source on a real mixed folder: every supported format, broken references, orientation, hostile rows."""

from pathlib import Path

import numpy as np
import pytest

from ovt.io import read_jsonl
from ovt.render.normalize import load_normalised
from tests.acquire.mixed_folder import build, run_folder


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixed")
    root = tmp / "folder" / "meshes"
    expect = build(root)
    stats = run_folder(root, tmp / "out")
    rows = {r["source_ref"]: r for r in read_jsonl(tmp / "out" / "manifest.jsonl")}
    failures = read_jsonl(tmp / "out" / "failures.jsonl")
    return expect, stats, rows, failures, tmp / "out"


def test_every_row_has_its_expected_outcome(result):
    expect, stats, rows, failures, _ = result
    accepted = {p for p, v in expect.items() if v == "ok"}
    assert set(rows) == accepted
    got = sorted((f["item"].split(":", 1)[1], f["error"]) for f in failures)
    want = sorted((p.split("#", 1)[0], v) for p, v in expect.items() if v != "ok")
    assert got == want
    assert stats["n_assets"] == len(accepted) and stats["n_failures"] == len(want)


def test_every_supported_extension_is_accepted(result):
    from ovt.acquire.meshdeps import SUPPORTED

    _, _, rows, _, _ = result
    assert {Path(p).suffix for p in rows} == set(SUPPORTED)


def test_missing_and_absolute_references_are_warnings_and_render_untextured(result):
    _, stats, rows, _, out = result
    assert rows["lego/lego.obj"]["missing_files"] == ["lego.mtl"]
    assert rows["table/table.obj"]["missing_files"] == ["table.tga"]
    assert rows["abs/abs.obj"]["missing_files"] == [
        "/home/carlos/modelos3d/jacuzzi/normal_map.jpg",
        "C:/images/textures/wood/tree.jpg",
    ]
    for ref in ("lego/lego.obj", "table/table.obj", "abs/abs.obj"):
        assert rows[ref]["textured"] is False
        mesh = load_normalised(out / rows[ref]["mesh"])
        # no image from the asset: none at all, or trimesh's flat placeholder for UVs without a material
        assert all(p.texture is None or len(np.unique(p.texture.reshape(-1, 4), axis=0)) == 1 for p in mesh.parts)
    stored_mtl = (out / rows["abs/abs.obj"]["mesh"]).with_suffix(".mtl").read_text()
    assert "C:/images" in stored_mtl and all(
        line.startswith("#") for line in stored_mtl.splitlines() if "C:/" in line or "/home/" in line
    )
    assert stats["n_with_missing_files"] == 3


def test_sibling_references_inside_the_root_are_stored_and_drawn(result):
    _, _, rows, _, out = result
    for ref in ("sib/sib.obj", "duck2/duck2.dae", "duck/duck.dae", "chairs/red/red.obj"):
        r = rows[ref]
        assert r["textured"] is True and r["missing_files"] == [], ref
        mesh = load_normalised(out / r["mesh"])
        assert any(p.texture is not None for p in mesh.parts), ref
    sib = rows["sib/sib.obj"]
    assert any(f.endswith("/_ext/shared/cube.png") for f in sib["files"])
    assert "map_Kd _ext/shared/cube.png" in (out / sib["mesh"]).with_suffix(".mtl").read_text()


def test_orientation_from_the_csv_is_in_the_manifest_and_applied_by_the_renderer(result):
    _, _, rows, _, out = result
    for ref in ("zup/tower.obj", "zup/tower_rot.ply"):
        r = rows[ref]
        assert r["rotation"] == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]
        pos = np.concatenate([p.positions for p in load_normalised(out / r["mesh"], r["rotation"]).parts])
        ext = pos.max(axis=0) - pos.min(axis=0)
        assert ext[1] == pytest.approx(ext.max()), ref  # the tall axis is now up (Y)
    assert rows["formats/box.glb"]["rotation"] is None


@pytest.mark.parametrize(
    "up,front,rotation",
    [("y", "y", ""), ("w", "", ""), ("z", "", "1 0 0 0 1 0 0 0 1"), ("", "", "1 2 3"), ("", "", "2 0 0 0 1 0 0 0 1")],
)
def test_bad_orientation_columns_are_row_errors(tmp_path, up, front, rotation):
    from ovt.acquire.config import LocalParams
    from ovt.acquire.sources.local import LocalSource

    (tmp_path / "assets.csv").write_text(f'path,category,up,front,rotation\nm.obj,X,{up},{front},"{rotation}"\n')
    (out,) = list(LocalSource(LocalParams(root=str(tmp_path))).candidates())
    assert out.reason == "bad_csv"

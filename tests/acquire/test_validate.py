import pytest

from ovt.acquire.candidate import ItemError
from ovt.acquire.validate import MeshInfo, check_declared, check_limits, first_pass, inspect_mesh
from tests.acquire.fixtures import MTL_TEXTURED, cube_obj, grid_obj, png_bytes


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def test_plain_cube(tmp_path):
    info = inspect_mesh(_write(tmp_path, "c.obj", cube_obj()))
    assert info == MeshInfo(n_vertices=8, n_faces=12, textured=False, extents=(1.0, 1.0, 1.0))


def test_textured_cube(tmp_path):
    _write(tmp_path, "m.mtl", MTL_TEXTURED)
    _write(tmp_path, "tex.png", png_bytes())
    info = inspect_mesh(_write(tmp_path, "c.obj", cube_obj(mtl="m.mtl", textured=True)))
    assert info.textured and info.n_faces == 12


def test_glb_roundtrip(tmp_path):
    import trimesh

    p = tmp_path / "box.glb"
    trimesh.creation.box().export(p)
    assert inspect_mesh(p).n_faces == 12


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("garbage.obj", b"\x00\xff\x10garbage" * 50, "unparseable"),  # binary bytes in a text format
        ("text.obj", b"hello, this is not a mesh\n" * 5, "unparseable"),  # text, but no OBJ statement
        ("garbage.glb", b"\x00\xff\x10garbage" * 50, "unparseable"),
        ("garbage.ply", b"\x00\xff\x10garbage" * 50, "unparseable"),
        ("garbage.stl", b"\x00\xff\x10garbage" * 50, "unparseable"),
        ("garbage.off", b"\x00\xff\x10garbage" * 50, "unparseable"),
        ("nothing.xyz123", b"v 0 0 0\n", "unparseable"),  # unknown format
        ("empty.obj", b"", "no_faces"),
        ("comments.obj", b"# exported by nothing\n", "no_faces"),
        ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no_faces"),  # vertices but no faces
        ("nan.obj", b"v nan 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 2 3 4\n", "nan_vertices"),
        ("inf.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 -inf\nf 1 2 3\nf 2 3 4\n", "nan_vertices"),
        (
            "noface.ply",
            (
                b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                b"property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n"
            ),
            "no_faces",
        ),
        ("collinear.obj", b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "degenerate"),
        ("point.obj", b"v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n", "degenerate"),
    ],
)
def test_bad_meshes_raise_item_errors_with_a_reason(tmp_path, name, data, reason):
    with pytest.raises(ItemError) as exc:
        inspect_mesh(_write(tmp_path, name, data))
    assert exc.value.reason == reason, exc.value


def test_missing_file_is_unparseable(tmp_path):
    with pytest.raises(ItemError, match="unparseable"):
        inspect_mesh(tmp_path / "absent.obj")


def test_face_limits(tmp_path):
    info = inspect_mesh(_write(tmp_path, "g.obj", grid_obj(10)))
    assert info.n_faces == 200
    check_limits(info, 1, 200)
    with pytest.raises(ItemError, match="too_many_faces"):
        check_limits(info, 1, 199)
    with pytest.raises(ItemError, match="too_few_faces"):
        check_limits(info, 201, 1000)


def test_nan_in_a_binary_format_is_named(tmp_path):
    import numpy as np
    import trimesh

    m = trimesh.creation.box()
    v = m.vertices.copy()
    v[0, 0] = np.nan
    p = tmp_path / "nan.ply"
    trimesh.Trimesh(v, m.faces, process=False).export(p)
    with pytest.raises(ItemError) as exc:
        inspect_mesh(p)
    assert exc.value.reason == "nan_vertices"


@pytest.mark.parametrize("fmt", ["obj", "ply", "stl", "off"])
def test_too_many_faces_is_decided_from_the_header_without_loading(fmt):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2)  # 320 faces
    data = mesh.export(file_type=fmt)
    data = data.encode() if isinstance(data, str) else data
    assert first_pass(f"m.{fmt}", data) == 320
    check_declared(f"m.{fmt}", data, 320)
    with pytest.raises(ItemError, match="too_many_faces.*not loaded"):
        check_declared(f"m.{fmt}", data, 319)


def test_formats_without_a_cheap_count_are_left_to_the_full_load():
    assert first_pass("m.glb", b"whatever") is None and first_pass("m.dae", b"<COLLADA/>") is None

import pytest

from ovt.acquire.candidate import ItemError
from ovt.acquire.validate import MeshInfo, check_limits, inspect_mesh
from tests.acquire.fixtures import MTL_TEXTURED, cube_obj, grid_obj, png_bytes


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def test_plain_cube(tmp_path):
    info = inspect_mesh(_write(tmp_path, "c.obj", cube_obj()))
    assert info == MeshInfo(n_vertices=8, n_faces=12, textured=False)


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


@pytest.mark.parametrize("name,data,reason", [
    ("garbage.obj", b"\x00\xff\x10garbage" * 50, "empty"),            # OBJ parser skips junk -> nothing left
    ("garbage.glb", b"\x00\xff\x10garbage" * 50, "unreadable"),
    ("nothing.xyz123", b"v 0 0 0\n", "unreadable"),                   # unknown format
    ("empty.obj", b"", "empty"),
    ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "empty"),          # vertices but no faces
    ("collinear.obj", b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "degenerate"),
    ("point.obj", b"v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n", "degenerate"),
])
def test_bad_meshes_raise_item_errors_with_a_reason(tmp_path, name, data, reason):
    with pytest.raises(ItemError) as exc:
        inspect_mesh(_write(tmp_path, name, data))
    assert exc.value.reason == reason, exc.value


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(ItemError, match="unreadable"):
        inspect_mesh(tmp_path / "absent.obj")


def test_face_limits(tmp_path):
    info = inspect_mesh(_write(tmp_path, "g.obj", grid_obj(10)))
    assert info.n_faces == 200
    check_limits(info, 1, 200)
    with pytest.raises(ItemError, match="too_many_faces"):
        check_limits(info, 1, 199)
    with pytest.raises(ItemError, match="too_few_faces"):
        check_limits(info, 201, 1000)

import numpy as np
import pytest

from ovt.render.normalize import MeshError, load_normalised, rotation_matrix

from .conftest import write_broken, write_marker_obj, write_textured_box

# rotation mapping raw +X onto canonical +Z (a quarter turn about Y), row-major as in the manifest
X_TO_Z = [0, 0, -1, 0, 1, 0, 1, 0, 0]


def _all(m):
    return np.concatenate([p.positions for p in m.parts])


def test_centred_unit_sphere_whatever_the_raw_placement(tmp_path):
    m = load_normalised(write_marker_obj(tmp_path / "a", offset=(100, -50, 7), scale=123.0))
    v = _all(m)
    assert np.isclose(np.linalg.norm(v, axis=1).max(), 1.0, atol=1e-5)
    assert np.allclose((v.min(0) + v.max(0)) / 2, 0, atol=1e-5)
    assert m.n_faces == 24


def test_rotation_is_applied_before_centring(tmp_path):
    m = load_normalised(write_marker_obj(tmp_path / "a", marker_axis=0), rotation=X_TO_Z)
    red = next(p for p in m.parts if p.colors[0, 0] > 0.9 and p.colors[0, 1] < 0.1)
    assert red.positions[:, 2].mean() > 0.5  # the marker, raw on +X, now faces the front (+Z)
    assert abs(red.positions[:, 0].mean()) < 0.05
    # normals follow the rotation too: the marker's outer face normal points to +Z
    assert red.normals[:, 2].max() > 0.99


def test_material_colours_and_textures_are_kept(tmp_path):
    m = load_normalised(write_marker_obj(tmp_path / "a"))
    colours = sorted(tuple(np.round(p.colors[0, :3], 2)) for p in m.parts)
    assert colours == [(0.6, 0.6, 0.6), (1.0, 0.0, 0.0)]
    t = load_normalised(write_textured_box(tmp_path / "b", colour=(0, 200, 0)))
    (part,) = t.parts
    assert part.texture is not None and part.uvs is not None and part.uvs.shape == (len(part.positions), 2)
    assert tuple(part.texture[0, 0]) == (0, 200, 0, 255)


def test_matrix_maps_raw_vertices(tmp_path):
    import trimesh

    p = write_marker_obj(tmp_path / "a", offset=(3, 4, 5), scale=10)
    m = load_normalised(p, rotation=X_TO_Z)
    raw = trimesh.load(p, force="mesh").vertices
    mapped = raw @ m.matrix[:3, :3].T + m.matrix[:3, 3]
    assert np.isclose(np.linalg.norm(mapped, axis=1).max(), 1.0, atol=1e-6)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(MeshError, match="not found"):
        load_normalised(tmp_path / "nope.obj")
    with pytest.raises(MeshError, match="broken.obj|no triangles"):
        load_normalised(write_broken(tmp_path / "b"))
    with pytest.raises(MeshError, match="rotation must be 9"):
        rotation_matrix([1, 0, 0])
    with pytest.raises(MeshError, match="singular"):
        rotation_matrix([0] * 9)

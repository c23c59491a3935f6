import numpy as np
import pytest
import trimesh

from ovt.evaluate.renderer import GLViewRenderer


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    from ovt.render.config import RenderParams

    try:
        r = GLViewRenderer(RenderParams(image_size=48, msaa=0), tmp_path_factory.mktemp("assets"), seed=0)
    except Exception as err:  # the real GL renderer needs an EGL driver
        pytest.skip(f"no GL context here: {err}")
    yield r
    r.close()


def test_renders_an_asymmetric_mesh_differently_from_front_and_side(renderer):
    # a slab that is wide in x and thin in z: wide seen from the front (+Z), narrow from the side (+X)
    mesh = trimesh.creation.box(extents=(2.0, 1.0, 0.2))
    path = renderer.assets_dir / "slab.obj"
    mesh.export(path)
    row = {"asset_id": "slab", "mesh": "slab.obj", "rotation": None}
    front = np.asarray(renderer(row, 0.0, 0.0, 3.0))
    side = np.asarray(renderer(row, 90.0, 0.0, 3.0))
    far = np.asarray(renderer(row, 0.0, 0.0, 4.0))
    assert front.shape == (48, 48, 3)

    def fg(img):
        return (img.min(axis=2) < 250).mean()

    assert fg(front) > 2 * fg(side) > 0
    assert fg(far) < fg(front)  # further away looks smaller

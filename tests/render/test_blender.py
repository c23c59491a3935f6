"""The blender backend (bpy 5.0.1 Cycles CPU in its own interpreter) agrees with gl on framing."""

import pytest

from ovt.render import stage
from ovt.render.cameras import light_for_object, sample_views
from ovt.render.config import BlenderParams, RenderParams, Ring, default_blender_python
from ovt.render.gl import GLRenderer
from ovt.render.normalize import load_normalised

from .conftest import asset_row, write_manifest, write_marker_obj

BLENDER_PY = default_blender_python(BlenderParams())
pytestmark = pytest.mark.skipif(
    not BLENDER_PY.exists(),
    reason=f"no blender python at {BLENDER_PY} (set OVT_BLENDER_PYTHON to an interpreter with bpy==5.0.1)")

X_TO_Z = [0, 0, -1, 0, 1, 0, 1, 0, 0]


def test_gl_and_blender_silhouettes_agree(tmp_path):
    from ovt.render.blender import BlenderRenderer

    cfg = RenderParams(image_size=64, rings=(Ring(elevation=20, n_azimuth=3, azimuth_offset=15),), poles=False)
    mesh = write_marker_obj(tmp_path / "m", marker_axis=0, offset=(10, 3, -4), scale=7)
    views, light = sample_views(cfg, 3), light_for_object(cfg, 3)
    gl = GLRenderer(64, msaa=4)
    try:
        g = gl.render(load_normalised(mesh, X_TO_Z), views, light)
    finally:
        gl.close()
    b = BlenderRenderer(BLENDER_PY, 64, samples=8, timeout_s=300).render_file(mesh, X_TO_Z, views, light)
    assert len(b) == 3
    for gi, bi in zip(g, b):
        gm, bm = gi[..., 3] > 127, bi[..., 3] > 127
        iou = (gm & bm).sum() / (gm | bm).sum()
        assert iou >= 0.9, iou
        # same orientation too: the red marker (front after the rotation) lands on the same pixels
        gr = gm & (gi[..., 0] > 150) & (gi[..., 1] < 90)
        br = bm & (bi[..., 0] > 150) & (bi[..., 1] < 90)
        if gr.sum() > 20:
            assert (gr & br).sum() / (gr | br).sum() > 0.7


def test_stage_with_blender_backend(tmp_path):
    d = tmp_path / "assets"
    write_manifest(d, [asset_row(d, write_marker_obj(d / "store" / "m"), "m")])
    cfg = RenderParams(backend="blender", image_size=32, rings=(Ring(elevation=10, n_azimuth=2),), poles=False,
                       blender=BlenderParams(samples=4), workers=1, object_timeout_s=300)
    stats = stage.run(cfg, seed=0, assets_dir=d, out_dir=tmp_path / "r", progress=False)
    assert stats["objects_ok"] == 1 and stats["views"] == 2 and stats["renderer"].startswith("blender: bpy 5.0.1")

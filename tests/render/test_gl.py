"""The gl backend on real EGL contexts (Mesa llvmpipe): framing, orientation, textures, transparency."""

import os

import numpy as np
import pytest

from ovt.render.cameras import light_for_object, sample_views
from ovt.render.config import RenderParams, Ring
from ovt.render.gl import GLRenderer
from ovt.render.images import composite, decode_png, encode_png, foreground_fraction
from ovt.render.normalize import load_normalised

from .conftest import write_marker_obj, write_textured_box

CFG = RenderParams(image_size=64, rings=(Ring(elevation=0, n_azimuth=4),), poles=True)


@pytest.fixture(scope="module")
def gl():
    r = GLRenderer(64, msaa=4)
    yield r
    r.close()


def _red(img):
    return (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 3] > 127)


def test_front_view_sees_the_front_marker(gl, tmp_path):
    views = sample_views(CFG, 0)  # azimuths 0, 90, 180, -90 at elevation 0, then top, bottom
    imgs = gl.render(load_normalised(write_marker_obj(tmp_path / "m")), views, light_for_object(CFG, 0))
    assert [v.azimuth for v in views[:4]] == [0, 90, 180, -90]
    front, side, back = imgs[0], imgs[1], imgs[2]
    assert _red(front).mean() > 0.1 and _red(back).sum() == 0
    # from azimuth +90 (camera on +X) the front (+Z) is on the image's left
    cols = np.nonzero(_red(side).any(axis=0))[0]
    assert cols.size and cols.max() < 32
    # top view: the front is at the bottom of the image
    rows = np.nonzero(_red(imgs[4]).any(axis=1))[0]
    assert rows.size and rows.min() > 32


def test_object_is_centred_and_fills_the_frame(gl, tmp_path):
    views = sample_views(CFG, 0)
    imgs = gl.render(
        load_normalised(write_marker_obj(tmp_path / "m", offset=(50, 50, 50))), views, light_for_object(CFG, 0)
    )
    for im in imgs:
        ys, xs = np.nonzero(im[..., 3] > 127)
        assert abs(xs.mean() - 31.5) < 4 and abs(ys.mean() - 31.5) < 4
        assert 0.08 < foreground_fraction(im) < 0.6
        # nothing touches the border: the unit sphere fits the field of view
        assert im[0, :, 3].max() == im[-1, :, 3].max() == im[:, 0, 3].max() == im[:, -1, 3].max() == 0


def test_texture_colour_reaches_the_image(gl, tmp_path):
    imgs = gl.render(
        load_normalised(write_textured_box(tmp_path / "b", colour=(0, 200, 0))),
        sample_views(CFG, 0),
        light_for_object(CFG, 0),
    )
    fg = imgs[0][imgs[0][..., 3] == 255][:, :3].astype(int)
    assert (fg[:, 1] > fg[:, 0] + 60).mean() > 0.95 and (fg[:, 1] > fg[:, 2] + 60).mean() > 0.95


def test_png_background_and_transparency(gl, tmp_path):
    (img,) = gl.render(
        load_normalised(write_marker_obj(tmp_path / "m")), sample_views(CFG, 0)[:1], light_for_object(CFG, 0)
    )
    rgb = decode_png(encode_png(img, transparent=False, background=(0.0, 0.0, 1.0)))
    assert rgb.shape == (64, 64, 3) and tuple(rgb[0, 0]) == (0, 0, 255)
    rgba = decode_png(encode_png(img, transparent=True, background=(1, 1, 1)))
    assert rgba.shape == (64, 64, 4) and rgba[0, 0, 3] == 0 and rgba[32, 32, 3] == 255
    assert np.array_equal(composite(rgba, (0, 0, 1)), rgb)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_gpu_objects_are_released_per_object(gl, tmp_path):
    """llvmpipe keeps buffers and textures in process memory: a 1024^2 texture (5.3 MB with mipmaps) leaked per
    object would grow the process by >150 MB over 30 objects."""
    mesh = load_normalised(write_textured_box(tmp_path / "b", tex_size=1024))
    views, light = sample_views(CFG, 0)[:1], light_for_object(CFG, 0)
    first = gl.render(mesh, views, light)
    for _ in range(3):
        gl.render(mesh, views, light)
    before = _rss_mb()
    for _ in range(30):
        again = gl.render(mesh, views, light)
    assert _rss_mb() - before < 40
    assert np.array_equal(first[0], again[0])  # deterministic, no state leaking between objects

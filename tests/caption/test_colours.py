import numpy as np
from PIL import Image, ImageDraw

from ovt.caption.colours import dominant_colours, foreground_mask, srgb_to_lab


def _square(colour, bg=(255, 255, 255), size=40, box=(8, 8, 31, 31), mode="RGB"):
    img = Image.new(mode, (size, size), bg)
    ImageDraw.Draw(img).rectangle(box, fill=colour)
    return img


def test_lab_reference_values():
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], dtype=np.uint8))
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.05)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=0.05)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.1)


def test_single_colour_on_white():
    s = dominant_colours(_square((200, 30, 30)))
    assert s.names == ["red"]
    assert 0.3 < s.foreground_fraction < 0.4  # 24x24 of 40x40


def test_two_colours_largest_first():
    img = _square((40, 80, 200), box=(4, 4, 35, 35))
    ImageDraw.Draw(img).rectangle((4, 4, 35, 14), fill=(240, 220, 40))
    s = dominant_colours(img)
    assert s.names == ["blue", "yellow"]
    assert s.shares["blue"] > s.shares["yellow"] > 0.2


def test_background_is_estimated_not_assumed_white():
    s = dominant_colours(_square((30, 130, 50), bg=(0, 0, 0)))
    assert s.names == ["green"]


def test_alpha_decides_foreground_for_rgba():
    img = _square((120, 70, 30, 255), bg=(255, 255, 255, 0), mode="RGBA")
    _, mask = foreground_mask(img, tolerance=24)
    assert mask.sum() == 24 * 24
    assert dominant_colours(img).names == ["brown"]


def test_empty_image_has_no_colours():
    s = dominant_colours(Image.new("RGB", (20, 20), (255, 255, 255)))
    assert s.names == [] and s.foreground_fraction == 0.0


def test_minor_colours_below_share_are_not_named():
    img = _square((200, 30, 30), box=(2, 2, 37, 37))
    ImageDraw.Draw(img).rectangle((2, 2, 5, 5), fill=(40, 80, 200))  # ~1% of the foreground
    assert dominant_colours(img, min_share=0.12).names == ["red"]

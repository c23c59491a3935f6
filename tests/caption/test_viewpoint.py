import pytest

from ovt.caption.viewpoint import height_word, side_word, view_words, wrap_azimuth


@pytest.mark.parametrize("az,expected", [(0, 0), (190, -170), (-180, 180), (360, 0), (540, 180), (-45.5, -45.5)])
def test_wrap_azimuth(az, expected):
    assert wrap_azimuth(az) == pytest.approx(expected)


@pytest.mark.parametrize(
    "az,side",
    [
        (0, "front"),
        (45, "front"),
        (-30, "front"),
        (60, "side"),
        (-90, "side"),
        (134, "side"),
        (135, "back"),
        (180, "back"),
        (-170, "back"),
        (315, "front"),
    ],
)
def test_side_word(az, side):
    assert side_word(az) == side


@pytest.mark.parametrize(
    "el,height",
    [
        (0, "level"),
        (10, "level"),
        (-10, "level"),
        (20, "high"),
        (60, "above"),
        (80, "overhead"),
        (90, "overhead"),
        (-40, "below"),
        (-90, "underneath"),
    ],
)
def test_height_word(el, height):
    assert height_word(el) == height


def test_phrases_follow_the_camera():
    assert view_words(0, 0).phrase == "seen from the front, at eye level"
    assert view_words(180, 60).phrase == "seen from the back, from above"
    assert view_words(90, -40).phrase == "seen from the side, from below"
    # straight down/up: front/back is meaningless, the phrase says top/bottom instead
    assert view_words(180, 89).side == "top" and "directly above" in view_words(180, 89).phrase
    assert view_words(0, -89).side == "bottom"

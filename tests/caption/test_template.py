import pytest

from ovt.caption.base import View
from ovt.caption.config import TemplateParams
from ovt.caption.template import TemplateCaptioner, size_words
from tests.caption.fixtures import render_image


def _view(az=0.0, el=5.0, view=0, colour=(200, 30, 30), **kw):
    meta = dict(
        name="Corner sofa",
        category="Living room",
        label="sofa",
        tags=["couch", "seat"],
        dims_cm={"width": 250, "depth": 200, "height": 80},
    )
    meta.update(kw)
    return View(
        key=f"aa_{view:03d}",
        asset_id="aa",
        view=view,
        image=render_image(colour, view),
        azimuth=az,
        elevation=el,
        **meta,
    )


@pytest.fixture
def guided():
    return TemplateCaptioner(TemplateParams(), guidance=True)


@pytest.mark.parametrize(
    "az,el,words,absent",
    [
        (0, 5, ["from the front", "eye level"], ["back", "side"]),
        (180, 60, ["from the back", "from above"], ["front"]),
        (-90, -40, ["from the side", "from below"], ["front", "back"]),
        (30, 85, ["directly above"], ["front", "back"]),
    ],
)
def test_viewpoint_words_match_the_camera(guided, az, el, words, absent):
    for seed in range(6):  # every phrasing keeps the viewpoint words
        text = guided.caption_one(_view(az, el), seed).caption.lower()
        for w in words:
            assert w in text, text
        for w in absent:
            assert w not in text.replace("background", ""), text


def test_guided_caption_names_object_category_colour_and_size(guided):
    texts = [guided.caption_one(_view(), s).caption.lower() for s in range(12)]
    for t in texts:
        assert "corner sofa" in t and "red" in t and "large" in t
    assert any("living room" in t for t in texts)
    assert any(("couch" in t) or ("seat" in t) for t in texts)


def test_guidance_names_the_label_when_the_name_does_not():
    cap = TemplateCaptioner(TemplateParams()).caption_one(_view(name="Chesterfield", label="sofa"), 3)
    assert "chesterfield" in cap.caption.lower() and "a sofa" in cap.caption.lower()


def test_guidance_off_uses_no_asset_metadata():
    plain = TemplateCaptioner(TemplateParams(), guidance=False)
    for seed in range(8):
        cap = plain.caption_one(_view(az=180, el=0), seed)
        t = cap.caption.lower()
        assert not cap.guided and cap.prompt.startswith("template:plain")
        assert "object" in t and "red" in t and "from the back" in t
        for word in ("sofa", "living room", "couch", "large"):
            assert word not in t


def test_phrasings_are_seeded_and_vary(guided):
    v = _view()
    assert guided.caption_one(v, 7).caption == guided.caption_one(v, 7).caption
    assert len({guided.caption_one(v, s).caption for s in range(30)}) >= 4


def test_provenance_fields(guided):
    cap = guided.caption([_view(view=2)], [1234])[0]
    row = cap.to_row()
    assert set(row) == {"key", "caption", "backend", "model", "model_version", "prompt", "guided", "seed"}
    assert row["key"] == "aa_002" and row["backend"] == "template" and row["seed"] == 1234 and row["guided"]
    assert row["model"] == "metadata-template" and row["model_version"].startswith("template-")
    assert row["prompt"].startswith("template:guided[")


def test_missing_metadata_falls_back_gracefully():
    cap = TemplateCaptioner(TemplateParams()).caption_one(
        _view(label=None, category=None, tags=[], dims_cm=None, name="Teddy bear"), 0
    )
    assert "teddy bear" in cap.caption.lower() and cap.guided
    nothing = TemplateCaptioner(TemplateParams()).caption_one(_view(label=None, name=None, category=None), 0)
    assert not nothing.guided and "object" in nothing.caption


@pytest.mark.parametrize(
    "dims,words",
    [
        ({"width": 10, "depth": 10, "height": 12}, ["small"]),
        ({"width": 250, "depth": 90, "height": 80}, ["large", "wide"]),
        ({"width": 200, "depth": 190, "height": 150}, ["large"]),
        ({"width": 40, "depth": 40, "height": 180}, ["tall"]),
        ({"width": 160, "depth": 60, "height": 40}, ["low"]),
        ({"width": 50, "depth": 50, "height": 50}, []),
        (None, []),
        ({"width": None, "depth": 0, "height": 0}, []),
    ],
)
def test_size_words(dims, words):
    assert size_words(dims) == words


def test_seed_count_mismatch_is_an_error(guided):
    with pytest.raises(ValueError, match="seeds"):
        guided.caption([_view()], [1, 2])

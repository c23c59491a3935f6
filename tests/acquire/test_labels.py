import pytest

from ovt.acquire.config import LabelParams
from ovt.acquire.labels import assign_labels, head_noun, raw_label


@pytest.mark.parametrize(
    "name,head",
    [
        ("Desk lamp", "lamp"),
        ("Armchair", "armchair"),
        ("Bed 140x190", "bed"),
        ("Lamp (ceiling)", "lamp"),
        ("Café chair", "chair"),
        ("TV", "tv"),
        ("3D", None),
        ("", None),
        ("Corner sofa 2", "sofa"),
    ],
)
def test_head_noun(name, head):
    assert head_noun(name) == head


def test_merges_drops_and_hints():
    cfg = LabelParams()
    assert raw_label("Leather couch", None, cfg) == "sofa"
    assert raw_label("Ceiling light", None, cfg) == "lamp"
    assert raw_label("Kitchen unit", None, cfg) is None
    assert raw_label("Whatever", "coffee_mug", cfg) == "coffee mug"  # a source hint wins over the name
    assert raw_label("x", "Couch", cfg) == "sofa"  # and is merged too


def test_min_per_class():
    cfg = LabelParams(min_per_class=2)
    assert assign_labels(["chair", "chair", "bed", None], cfg) == ["chair", "chair", None, None]

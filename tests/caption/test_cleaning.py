import pytest

from ovt.caption.base import Caption
from ovt.caption.cleaning import Cleaner, TextTower, dedup_key, minilm_path
from ovt.caption.config import CleaningParams


def _cap(key, text):
    return Caption(key=key, caption=text, backend="test", model="m", model_version="v", prompt="p", guided=True, seed=0)


@pytest.fixture(scope="module")
def tower():
    return TextTower(minilm_path())


def test_truncate_fits_the_token_budget_on_a_word_boundary(tower):
    text = "a red sofa " + " ".join(["extraordinarily"] * 40) + " seen from the front"
    cut = tower.truncate(text, 16)
    assert tower.n_tokens(cut) <= 16
    assert text.startswith(cut) and cut.split(" ")[-1] == "extraordinarily"


def test_long_captions_are_truncated_by_default_and_counted():
    cleaner = Cleaner(CleaningParams(max_tokens=12, consistency_filter=False))
    long = "a large red corner sofa from the living room category seen from the back at eye level with cushions"
    res = cleaner.clean([_cap("a_000", long), _cap("a_001", "a red sofa")], [None, None], ["a", "a"])
    assert res.counts["truncated"] == 1 and res.counts["kept"] == 2
    assert cleaner.tower.n_tokens(res.kept[0].caption) <= 12 and long.startswith(res.kept[0].caption)
    assert res.kept[1].caption == "a red sofa"


def test_drop_policy_and_word_limit_fallback():
    long = " ".join(["word"] * 30)
    dropped = Cleaner(CleaningParams(max_tokens=8, too_long="drop", consistency_filter=False)).clean(
        [_cap("a_000", long)], [None], ["a"]
    )
    assert dropped.counts["dropped_too_long"] == 1 and not dropped.kept
    assert dropped.dropped[0]["reason"] == "too_long" and "8 tokens" in dropped.dropped[0]["detail"]
    words = Cleaner(CleaningParams(tokenizer=None, max_words=5, consistency_filter=False))
    assert words.tower is None  # no model needed at all
    res = words.clean([_cap("a_000", long)], [None], ["a"])
    assert res.kept[0].caption == "word word word word word" and res.counts["truncated"] == 1


def test_dedup_per_object_and_empty():
    cleaner = Cleaner(CleaningParams(tokenizer=None, consistency_filter=False))
    caps = [
        _cap("a_000", "A red sofa."),
        _cap("a_001", "a  red sofa"),
        _cap("b_000", "a red sofa"),
        _cap("a_002", "a red sofa seen from the back"),
        _cap("a_003", "   "),
        _cap("a_004", "sofa"),
    ]
    res = cleaner.clean(caps, [None] * 6, ["a", "a", "b", "a", "a", "a"])
    assert [c.key for c in res.kept] == ["a_000", "b_000", "a_002"]  # dedup is per object: b keeps its copy
    assert res.counts["dropped_duplicate"] == 1 and res.counts["dropped_empty"] == 2
    assert {d["key"]: d["reason"] for d in res.dropped} == {"a_001": "duplicate", "a_003": "empty", "a_004": "empty"}
    assert dedup_key("A red sofa.") == dedup_key("a red   sofa")


def test_consistency_filter_drops_captions_nearer_another_class():
    cleaner = Cleaner(CleaningParams(), vocabulary=["sofa", "lamp", "chair", "Sofa", None])
    assert cleaner.vocabulary == ["chair", "lamp", "sofa"]
    caps = [
        _cap("s_000", "a 3D render of a red sofa seen from the front"),
        _cap("s_001", "a 3D render of a desk lamp seen from the side"),  # says lamp, class is sofa
        _cap("l_000", "a yellow desk lamp seen from above"),
        _cap("t_000", "a brown teddy bear"),  # class null: not checked
        _cap("x_000", "a blue chair"),
    ]  # class outside vocabulary
    res = cleaner.clean(caps, ["sofa", "sofa", "lamp", None, "table"], ["s", "s", "l", "t", "x"])
    assert [d["key"] for d in res.dropped] == ["s_001"]
    assert res.dropped[0]["reason"] == "inconsistent" and "'lamp'" in res.dropped[0]["detail"]
    assert res.counts["dropped_inconsistent"] == 1 and res.counts["unchecked"] == 2 and res.counts["kept"] == 4


def test_filter_off_keeps_inconsistent_captions():
    res = Cleaner(CleaningParams(consistency_filter=False), vocabulary=["sofa", "lamp"]).clean(
        [_cap("s_001", "a desk lamp")], ["sofa"], ["s"]
    )
    assert res.counts["kept"] == 1 and not res.dropped


def test_missing_tokenizer_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="caption.cleaning.tokenizer"):
        Cleaner(CleaningParams(tokenizer=str(tmp_path / "nope")))

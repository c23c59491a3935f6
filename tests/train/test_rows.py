"""Columnar rows: every access path returns what the `Pair` list it replaces held, before and after filtering,
concatenation and the save / memory-mapped load round trip the train stage hands tables over with."""

import pickle
import tempfile

import numpy as np
import pytest

from ovt.train.config import DataParams
from ovt.train.data import TrainTable, build_table
from ovt.train.rows import ImageRef, Pair, Rows, StrColumn

PAIRS = [
    Pair("k0", "a chair", ImageRef("/r/s0.tar", "k0.png"), obj=0, group="obj:0", source=("k0", "s0.tar")),
    Pair("k1", "ünïcode ✓ caption", ImageRef("/r/s0.tar", "k1.png"), obj=0, group="obj:0", source=("k1", "s0.tar")),
    Pair("k2", "", ImageRef("/r/s1.tar", "k2.png"), obj=1, group="obj:1", source=("k2", "s1.tar")),
    Pair("2d:k0", "a photo of a chair.", ImageRef("/r/s0.tar", "k0.png"), group="txt:a photo", source=("k0", "s0.tar")),
    Pair("2d:x.jpg", "a photo", ImageRef("/imgs/x.jpg"), group="txt:a photo"),
]


def mapped(x):
    """`x` (Rows or TrainTable) saved and memory-mapped back, as `load_table` hands a child's table over (the files
    go with the folder at once: the mappings keep them)."""
    with tempfile.TemporaryDirectory() as tmp:
        return type(x).load(tmp, x.save(tmp))


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda r: r, id="built"),
        pytest.param(mapped, id="mapped"),
        pytest.param(lambda r: pickle.loads(pickle.dumps(r)), id="pickled"),
        pytest.param(lambda r: pickle.loads(pickle.dumps(mapped(r))), id="mapped-pickled"),
        pytest.param(lambda r: Rows.concat([r[:2], r[2:]]), id="concat"),
        pytest.param(lambda r: Rows.concat([mapped(r[:2]), r[2:]]), id="concat-mapped"),
    ],
)
def test_rows_hold_the_pairs(transform):
    rows = transform(Rows.of(PAIRS))
    assert len(rows) == len(PAIRS) and list(rows) == PAIRS
    assert [rows[i] for i in range(-len(PAIRS), 0)] == PAIRS
    assert [rows.image(i) for i in range(len(rows))] == [p.image for p in PAIRS]
    assert [rows.source(i) for i in range(len(rows))] == [p.source for p in PAIRS]
    assert list(rows.text) == [p.text for p in PAIRS]
    # equal group codes exactly where the groups are equal
    codes = np.asarray(rows.group_code)
    assert (codes[:, None] == codes[None, :]).tolist() == [[a.group == b.group for b in PAIRS] for a in PAIRS]
    with pytest.raises(IndexError):
        rows[len(PAIRS)]


@pytest.mark.parametrize("lo,hi", [(0, 0), (0, 3), (2, 5), (4, 5), (5, 5)])
def test_slices_and_select(lo, hi):
    rows = Rows.of(PAIRS)
    assert list(rows[lo:hi]) == PAIRS[lo:hi]
    assert list(rows[lo:hi].text) == [p.text for p in PAIRS[lo:hi]]
    keep = np.zeros(len(PAIRS), bool)
    keep[lo:hi] = True
    keep[0] = True
    assert list(rows.select(keep)) == [p for p, k in zip(PAIRS, keep) if k]
    assert list(mapped(rows[lo:hi])) == PAIRS[lo:hi]


def test_str_column_empty_and_unicode():
    assert len(StrColumn.of([])) == 0 and list(StrColumn.of(["", ""])) == ["", ""]
    col = StrColumn.of(["é", "日本", "x"])
    assert col[1] == "日本" and list(col[1:]) == ["日本", "x"] and list(col.take(np.array([2, 0]))) == ["x", "é"]


def test_source_key_must_end_the_row_key():
    with pytest.raises(ValueError, match="source key"):
        Rows.of([Pair("a", "t", ImageRef("p"), source=("b", "s"))])


def test_load_maps_the_columns_out_of_the_heap(tmp_path):
    rows = Rows.of(PAIRS * 50)
    lists = rows.save(tmp_path)
    assert not list(tmp_path.glob(".*"))  # no temporary left
    loaded = Rows.load(tmp_path, lists)
    for col in (loaded.obj, loaded.key.data, loaded.text.ends, loaded.caption_order()):
        assert isinstance(col, np.memmap)
    assert list(loaded) == list(rows) and loaded.nbytes == rows.nbytes


def test_table_keep_copy_and_rows_of_object(tree):
    t = build_table(DataParams(), *tree)
    before = list(t.pairs)
    c = t.copy()
    keep = np.ones(len(t.pairs), bool)
    keep[[0, 5, len(t.mv)]] = False  # two multi-view rows and the first 2D row
    c.keep(keep)
    assert list(t.pairs) == before  # the original is untouched
    assert c.n_mv == len(t.mv) - 2 and list(c.mv) == [p for i, p in enumerate(t.mv) if keep[i]]
    assert list(c.twod) == list(t.twod)[1:]
    for o, rows in enumerate(c.rows_of_object()):
        assert rows.tolist() == [i for i, p in enumerate(c.mv) if p.obj == o]
    s = mapped(TrainTable.of(list(t.mv), list(t.twod), t.objects, t.sources))
    assert list(s.pairs) == before and s.n_mv == t.n_mv


@pytest.mark.parametrize("path", ["x.jpg", "/a.jpg", "a//b.jpg", "rel/dir/c d.png", "/views/u1/026.png", "dir/"])
def test_image_files_round_trip_character_for_character(path):
    rows = Rows.of([Pair("k", "t", ImageRef(path)), Pair("k2", "t", ImageRef("/views/u1/027.png"))])
    assert rows.image(0) == ImageRef(path) and mapped(rows).image(0) == ImageRef(path)


def test_files_of_one_folder_share_one_folder_string():
    rows = Rows.of([Pair(f"k{i}", "t", ImageRef(f"/set/views/u{i // 24}/{i % 24:03d}.png")) for i in range(96)])
    assert rows.folders == [f"/set/views/u{i}/" for i in range(4)]


def test_load_table_builds_in_a_child_and_maps_the_columns(tree):
    from ovt.train.data import DataError, load_table

    want = build_table(DataParams(), *tree)
    got = load_table(DataParams(), *tree)
    assert list(got.pairs) == list(want.pairs) and got.n_mv == want.n_mv and got.objects == want.objects
    assert got.sources == want.sources and isinstance(got.rows.text.data, np.memmap)
    with pytest.raises(DataError, match="no captioned train-split views"):  # the child's error, raised here
        load_table(DataParams(elevation_bands=[(80, 90)]), *tree)


def test_load_table_relays_the_childs_warnings(tmp_path, caplog):
    from ovt.train.data import load_table
    from tests.train.fixtures import make_tree

    renders, captions = make_tree(tmp_path)  # its own tree: one caption is removed below
    side = next((captions / "shards").glob("captions-*.jsonl"))
    side.write_text("".join(side.read_text().splitlines(keepends=True)[1:]))  # one view loses its caption
    with caplog.at_level("INFO"):
        load_table(DataParams(), renders, captions)
    assert any(r.levelname == "WARNING" and "have no caption" in r.getMessage() for r in caplog.records)


def test_sorted_texts_and_their_merge_match_sorting_the_set():
    from ovt.train.captions import CaptionSource
    from ovt.train.rows import caption_key, merge_sorted_texts

    a = Rows.of(PAIRS)
    b = Rows.of([Pair("z", "a chair", ImageRef("p")), Pair("y", "zz", ImageRef("p")), Pair("x", "b", ImageRef("p"))])

    def want(*rows):
        return sorted({t for r in rows for t in r.text}, key=caption_key)

    assert list(a.sorted_texts()) == want(a) and list(mapped(a).sorted_texts()) == want(a)
    assert list(a[1:4].sorted_texts()) == want(a[1:4])
    merged = list(merge_sorted_texts(a.sorted_texts(), b.sorted_texts()))  # a shared caption once from each table
    assert merged == sorted([*want(a), *want(b)], key=caption_key) and list(dict.fromkeys(merged)) == want(a, b)
    source = CaptionSource("bank", "k", lambda: merge_sorted_texts(a.sorted_texts(), b.sorted_texts()))
    assert list(source.ordered()) == want(a, b)  # what the bank encodes: each caption once


def test_caption_source_streams_in_order_and_refuses_disorder(tmp_path):
    from ovt.train.captions import CaptionSource

    ok = CaptionSource(tmp_path, "k", lambda: iter(["a", "a", "b", "ab"]))
    assert list(ok.ordered()) == ["a", "b", "ab"]
    with pytest.raises(ValueError, match="sorted by"):
        list(CaptionSource(tmp_path, "k", lambda: iter(["ab", "a"])).ordered())

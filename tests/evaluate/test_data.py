import numpy as np
import pytest
from PIL import Image

from ovt.evaluate.data import load_heldout_views, select_heldout_rows
from ovt.shards import to_rgb

from .fixtures import CLASSES, make_renders


def test_reads_only_heldout_labelled_views_in_stable_order(tmp_path):
    renders, assets = make_renders(tmp_path)
    fails = []
    v = load_heldout_views(renders, assets / "manifest.jsonl", max_objects=None,
                           on_failure=lambda *a: fails.append(a))
    assert not fails
    assert v.classnames == CLASSES
    assert len(v.object_ids) == 6 and len(v.rows) == 6 * 6 == len(v.images)
    assert all(r["split"] == "heldout" for r in v.rows)
    assert [r["key"] for r in v.rows] == sorted(r["key"] for r in v.rows)
    assert all(im.mode == "RGB" for im in v.images)
    assert v.canonical.sum() == 6  # (az 0, el 10) per object
    # labels map to the vocabulary and the object index is dense
    assert set(v.object_index.tolist()) == set(range(6))
    assert [v.classnames[t] for t in v.target] == [r["label"] for r in v.rows]


def test_missing_member_is_logged_and_skipped(tmp_path):
    renders0, _ = make_renders(tmp_path / "a")
    first = select_heldout_rows([__import__("json").loads(l) for l in (renders0 / "manifest.jsonl").open()])[0]
    renders, assets = make_renders(tmp_path / "b", drop_key=first["key"])
    fails = []
    v = load_heldout_views(renders, assets / "manifest.jsonl", max_objects=2,
                           on_failure=lambda item, err, detail: fails.append((item["key"], err)))
    assert fails == [(first["key"], "missing_member")]
    assert len(v.rows) == 2 * 6 - 1 and len(v.object_ids) == 2


def test_transparent_renders_are_composited_on_white():
    im = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    im.putpixel((1, 0), (10, 20, 30, 255))
    out = np.asarray(to_rgb(im))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [10, 20, 30]


def test_no_heldout_views_is_a_clear_error(tmp_path):
    renders, assets = make_renders(tmp_path)
    rows = (renders / "manifest.jsonl").read_text().replace('"heldout"', '"train"')
    (renders / "manifest.jsonl").write_text(rows)
    with pytest.raises(ValueError, match="no held-out labelled views"):
        load_heldout_views(renders, assets / "manifest.jsonl", max_objects=None, on_failure=print)

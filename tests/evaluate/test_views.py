import numpy as np
import pytest
from PIL import Image

from ovt.evaluate.views import load_views, select_rows
from ovt.shards import to_rgb

from .fixtures import CLASSES, make_renders


def test_reads_only_the_test_splits_labelled_views_in_stable_order(tmp_path):
    renders, assets = make_renders(tmp_path)
    fails = []
    v = load_views(renders, assets / "manifest.jsonl", max_objects=None, on_failure=lambda *a: fails.append(a))
    assert not fails
    assert v.classnames == CLASSES
    assert len(v.object_ids) == 6 and len(v.rows) == 6 * 6 == len(v.images)
    assert all(r["split"] == "test" for r in v.rows)
    assert [r["key"] for r in v.rows] == sorted(r["key"] for r in v.rows)
    assert all(im.mode == "RGB" for im in v.images)
    assert v.canonical.sum() == 6  # (az 0, el 10) per object
    # labels map to the vocabulary and the object index is dense
    assert set(v.object_index.tolist()) == set(range(6))
    assert [v.classnames[t] for t in v.target] == [r["label"] for r in v.rows]


def test_missing_member_is_logged_and_skipped(tmp_path):
    renders0, _ = make_renders(tmp_path / "a")
    first = select_rows([__import__("json").loads(l) for l in (renders0 / "manifest.jsonl").open()])[0]
    renders, assets = make_renders(tmp_path / "b", drop_key=first["key"])
    fails = []
    v = load_views(
        renders,
        assets / "manifest.jsonl",
        max_objects=2,
        on_failure=lambda item, err, detail: fails.append((item["key"], err)),
    )
    assert fails == [(first["key"], "missing_member")]
    assert len(v.rows) == 2 * 6 - 1 and len(v.object_ids) == 2


def test_transparent_renders_are_composited_on_white():
    im = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    im.putpixel((1, 0), (10, 20, 30, 255))
    out = np.asarray(to_rgb(im))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [10, 20, 30]


def test_no_views_of_the_split_is_a_clear_error(tmp_path):
    renders, assets = make_renders(tmp_path)
    with pytest.raises(ValueError, match="no labelled validation views"):
        load_views(renders, assets / "manifest.jsonl", split="validation", max_objects=None, on_failure=print)
    with pytest.raises(ValueError, match="evaluate.split"):
        select_rows([], split="heldout")


def test_split_values_old_and_new_manifests():
    rows = [
        {
            "key": f"{a}_{v:03d}",
            "shard": "s",
            "asset_id": a,
            "view": v,
            "azimuth": 0.0,
            "elevation": 0.0,
            "canonical": True,
            "split": split,
            "label": "chair",
        }
        for a, split in (("a", "train"), ("b", "validation"), ("c", "test"), ("d", "heldout"))
        for v in (0, 1)
    ]
    assert {r["asset_id"] for r in select_rows(rows, "test")} == {"c", "d"}  # "heldout": test of old manifests
    assert {r["asset_id"] for r in select_rows(rows, "validation")} == {"b"}
    assert [r["asset_id"] for r in select_rows(rows, "test", max_objects=1)] == ["c", "c"]

import json
from pathlib import Path

import pytest
from PIL import Image

from ovt.train.config import DataParams
from ovt.train.data import DataError, ImageReader, build_table, csv_pairs, mvcap_pairs


def test_render_pairs_train_split_sorted_by_object(tree):
    t = build_table(DataParams(), *tree)
    assert len(t.objects) == 5 and len(t.mv) == 40  # object 5 is held out
    assert [p.obj for p in t.mv] == sorted(p.obj for p in t.mv)
    assert t.mv[0].text.startswith("a 3D render of a chair")
    # canonical 2D source: one canonical view per training object, class-name prompt
    assert len(t.twod) == 5 and {p.text for p in t.twod} == {
        "a 3D render of a chair.",
        "a 3D render of a lamp.",
        "a 3D render of a table.",
    }
    assert ImageReader()(t.mv[0].image).size == (32, 32)


def test_elevation_bands_and_subsample(tree):
    t = build_table(DataParams(elevation_bands=[(-90, 10)], max_views_per_object=3), *tree)
    assert len(t.mv) == 5 * 3  # 4 views per object in the band (-30, 0), subsampled to 3
    with pytest.raises(DataError, match="elevation bands"):
        build_table(DataParams(elevation_bands=[(80, 90)]), *tree)


def test_bad_params_named():
    with pytest.raises(ValueError, match="cache_prefix"):
        DataParams(augment=True)
    with pytest.raises(ValueError, match="twod_path"):
        DataParams(twod_source="csv")
    with pytest.raises(ValueError, match="empty"):
        DataParams(elevation_bands=[(10, 0)])


def test_missing_inputs_named(tmp_path, tree):
    with pytest.raises(DataError, match="manifest"):
        build_table(DataParams(), tmp_path, tree[1])
    with pytest.raises(DataError, match="captions"):
        build_table(DataParams(), tree[0], tmp_path)


def test_csv_and_mvcap_sources(tmp_path):
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / f"im{i}.png")
    (tmp_path / "pairs.csv").write_text("filepath,title\n" + "".join(f"im{i}.png,a photo of {i}\n" for i in range(4)))
    pairs = csv_pairs(tmp_path / "pairs.csv")
    assert [p.text for p in pairs] == [f"a photo of {i}" for i in range(4)] and Path(pairs[0].image.path).exists()
    (tmp_path / "bad.csv").write_text("path,caption\nx,y\n")
    with pytest.raises(DataError, match="filepath"):
        csv_pairs(tmp_path / "bad.csv")
    meta = [{"path": f"./im{i}.png", "caption": f"c{i}", "obj_id": i // 2, "img_id": i} for i in range(4)]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    mv, objects = mvcap_pairs(tmp_path / "metadata.json", None, DataParams())
    assert objects == ["0", "1"] and [p.obj for p in mv] == [0, 0, 1, 1]
    assert ImageReader()(mv[3].image).getpixel((0, 0)) == (150, 0, 0)


def test_webdataset_source(tmp_path):
    import io
    import tarfile

    from ovt.train.data import webdataset_pairs

    with tarfile.open(tmp_path / "wds-000.tar", "w") as tf:
        for i in range(3):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (0, i * 60, 0)).save(buf, format="JPEG")
            for name, data in ((f"s{i}.jpg", buf.getvalue()), (f"s{i}.txt", f"photo {i}\n".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("orphan.jpg")  # an image without a caption is not a pair
        info.size = 0
        tf.addfile(info, io.BytesIO(b""))
    pairs = webdataset_pairs(tmp_path)
    assert [p.text for p in pairs] == ["photo 0", "photo 1", "photo 2"]
    assert ImageReader()(pairs[1].image).size == (8, 8)
    with pytest.raises(DataError, match="not found"):
        webdataset_pairs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tar"):
        webdataset_pairs(tmp_path / "empty")


def test_mvcap_rows_keyed_by_path_and_hv_refused(tmp_path):
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / f"im{i}.png")
    # img_id repeats across objects (as in released metadata): rows must still be told apart
    meta = [{"path": f"./im{i}.png", "caption": f"c{i}", "obj_id": i // 2, "img_id": i % 2} for i in range(4)]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    mv, _ = mvcap_pairs(tmp_path / "metadata.json", None, DataParams())
    assert len({p.key for p in mv}) == 4
    # the `_hv` variants hold viewpoints out by pose; MVCap records none: refused, never silently all views
    with pytest.raises(DataError, match="heldout_viewpoints"):
        build_table(
            DataParams(mvcap_metadata=tmp_path / "metadata.json", elevation_bands=[(-90, 45)], twod_source="none"),
            None,
            None,
        )


def test_only_train_split_objects_and_unlabelled_ones_too(tmp_path):
    from tests.train.fixtures import make_tree

    renders, captions = make_tree(tmp_path / "d", n_objects=6, heldout=(4, 5))
    manifest = renders / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:
        if r["obj_id"] == 4:
            r["split"] = "validation"
        if r["obj_id"] == 5:
            r["split"] = "test"
        if r["obj_id"] == 0:
            r["label"] = None  # an unlabelled training object still trains (it has captions)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = build_table(DataParams(twod_source="none"), renders, captions)
    assert len(t.objects) == 4 and rows[0]["asset_id"] in t.objects
    assert all(p.source is not None for p in t.mv)
    assert len(build_table(DataParams(twod_source="none", labelled_only=True), renders, captions).objects) == 3

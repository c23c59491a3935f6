import json
from pathlib import Path

import pytest

from ovt.caption.mvcap import (
    MVCapFormatError,
    MVCapRecord,
    iter_images,
    read_caption_shards,
    read_metadata,
    write_metadata,
)

RELEASE = Path(__file__).parent / "data" / "mvcap_release"


def test_reads_the_released_format_fixture():
    recs = read_metadata(RELEASE / "metadata.json", check_images=True)
    assert len(recs) == 4
    first = recs[0]
    assert first.path == "./views/54cadb86f3db4aa6920f673aeff0d1e3/026.png"
    assert first.obj_id == 3177 and first.img_id == 317726 and first.caption.startswith("The rocking chair")
    assert first.image_path == RELEASE / "views/54cadb86f3db4aa6920f673aeff0d1e3/026.png"
    assert first.load_image().size == (8, 8)
    # views of one object share obj_id (what the cross-view loss groups by)
    assert [r.obj_id for r in recs] == [3177, 3177, 12, 12]


def test_root_can_be_elsewhere_and_missing_images_are_named(tmp_path):
    meta = tmp_path / "metadata.json"
    meta.write_text((RELEASE / "metadata.json").read_text())
    recs = read_metadata(meta, root=RELEASE, check_images=True)
    assert recs[2].load_image().getpixel((0, 0)) == (230, 230, 230)
    with pytest.raises(FileNotFoundError, match="026.png"):
        read_metadata(meta, check_images=True)  # default root = the metadata's folder, which has no views/


@pytest.mark.parametrize(
    "content,match",
    [
        ("{}", "expected a JSON list"),
        ("[1]", "row 0 is a int"),
        ('[{"path": "./a.png", "caption": "x"}]', r"row 0 lacks field\(s\) \['obj_id'\]"),
        ('[{"path": "./a.png", "caption": "x", "obj_id": "seven"}]', "must be integers"),
        ("[{", "not valid JSON"),
    ],
)
def test_bad_metadata_is_named(tmp_path, content, match):
    meta = tmp_path / "metadata.json"
    meta.write_text(content)
    with pytest.raises(MVCapFormatError, match=match):
        read_metadata(meta)


def test_img_id_defaults_to_row_index_like_the_original_loader(tmp_path):
    meta = tmp_path / "metadata.json"
    meta.write_text(
        json.dumps(
            [{"path": "./a.png", "caption": "x", "obj_id": 1}, {"path": "/abs/b.png", "caption": "y", "obj_id": 1}]
        )
    )
    recs = read_metadata(meta)
    assert [r.img_id for r in recs] == [0, 1]
    assert recs[1].image_path == Path("/abs/b.png")


def test_write_then_read_round_trips(tmp_path):
    recs = [
        MVCapRecord(path=f"./views/u{i}/00{i}.png", caption=f"caption “{i}”", obj_id=i // 2, img_id=i) for i in range(5)
    ]
    assert write_metadata(tmp_path / "metadata.json", recs) == 5
    back = read_metadata(tmp_path / "metadata.json")
    assert [r.to_row() for r in back] == [r.to_row() for r in recs]
    assert json.loads((tmp_path / "metadata.json").read_text())[0] == recs[0].to_row()
    write_metadata(tmp_path / "empty.json", [])
    assert read_metadata(tmp_path / "empty.json") == []


def test_iter_images_mixes_files_and_shards():
    recs = read_metadata(RELEASE / "metadata.json")
    pairs = list(iter_images(recs))
    assert [r.img_id for r, _ in pairs] == [r.img_id for r in recs]
    assert all(im.size == (8, 8) for _, im in pairs)


def test_read_caption_shards_without_captions_is_empty(tmp_path):
    assert read_caption_shards(tmp_path / "captions", tmp_path / "renders") == []

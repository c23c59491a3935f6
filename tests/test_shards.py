"""The one shard module: writer, integrity check, streaming and random-access readers."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from ovt import shards


def _png(colour, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (4, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


def _write(tmp_path, index=0, n=3, key="k0"):
    folder = tmp_path / "shards"
    folder.mkdir(exist_ok=True)
    tar = folder / f"{shards.shard_name(index)}.tar"
    samples = [{"__key__": f"a{index}_{v:03d}", "png": _png((v * 40, 0, 0)), "json": {"view": v}} for v in range(n)]
    with open(tar, "wb") as fh:
        shards.write_samples(fh, samples)
    return tar, shards.write_record(tar, {"key": key})


def test_written_shard_passes_the_check_and_reads_back_in_order(tmp_path):
    tar, record = _write(tmp_path)
    assert record["tar_bytes"] == tar.stat().st_size
    assert shards.check(tar) == record
    assert shards.check(tar, expected_key="k0") == record
    got = list(shards.iter_samples(tar))
    assert [k for k, _ in got] == ["a0_000", "a0_001", "a0_002"]
    assert shards.sample_json(*got[1]) == {"view": 1}
    assert shards.decode_rgb(got[2][1]["png"]).getpixel((0, 0)) == (80, 0, 0)


def test_identical_samples_give_identical_bytes(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, _ = _write(tmp_path / "a")
    b, _ = _write(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("damage", ["no_record", "bad_json", "no_key", "truncated", "wrong_key"])
def test_incomplete_shards_fail_the_one_check(tmp_path, damage):
    tar, record = _write(tmp_path)
    rec = shards.record_path(tar)
    expected = None
    if damage == "no_record":
        rec.unlink()
    elif damage == "bad_json":
        rec.write_text("{not json")
    elif damage == "no_key":
        rec.write_text(json.dumps({k: v for k, v in record.items() if k != "key"}))
    elif damage == "truncated":
        tar.write_bytes(tar.read_bytes()[:-512])
    else:
        expected = "another"
    assert shards.check(tar, expected_key=expected) is None
    complete, incomplete = shards.list_shards(tmp_path / "shards")
    if damage != "wrong_key":
        assert complete == [] and incomplete == [tar]


def test_list_shards_sorts_and_names_a_missing_folder(tmp_path):
    _write(tmp_path, index=1, key="k1")
    _write(tmp_path, index=0, key="k0")
    complete, incomplete = shards.list_shards(tmp_path / "shards")
    assert [(s.index, s.key, s.name) for s in complete] == [(0, "k0", "shard-00000"), (1, "k1", "shard-00001")]
    assert incomplete == []
    with pytest.raises(FileNotFoundError, match="nowhere"):
        shards.list_shards(tmp_path / "nowhere")


def test_key_filter_and_random_access(tmp_path):
    tar, _ = _write(tmp_path, n=4)
    assert [k for k, _ in shards.iter_samples(tar, keys={"a0_001", "a0_003"})] == ["a0_001", "a0_003"]
    reader = shards.SampleReader()
    assert shards.decode_rgb(reader.read(tar, "a0_002.png")).getpixel((0, 0)) == (80, 0, 0)
    with pytest.raises(KeyError, match="a0_009.png"):
        reader.read(tar, "a0_009.png")
    import pickle

    clone = pickle.loads(pickle.dumps(reader))  # DataLoader workers open their own handles
    assert clone.read(tar, "a0_000.png") == reader.read(tar, "a0_000.png")
    reader.close()


def test_transparent_pixels_composite_onto_white():
    rgba = _png((255, 0, 0, 0), mode="RGBA")
    assert shards.decode_rgb(rgba).getpixel((1, 1)) == (255, 255, 255)
    assert shards.decode_rgb(rgba, background=(0, 0, 0)).getpixel((1, 1)) == (0, 0, 0)


def test_render_assembly_writes_through_the_shard_writer(tmp_path):
    # a render shard assembled from per-object parts is what the one writer gives the same samples, in asset order,
    # passes the one check, and skips failed objects
    from ovt.render import shards as render_shards

    spec = render_shards.ShardSpec(0, ({"asset_id": "b"}, {"asset_id": "x"}, {"asset_id": "a"}), key="k")
    wdir = render_shards.work_dir(tmp_path, spec)
    wdir.mkdir(parents=True)
    parts = {
        aid: [{"__key__": f"{aid}_{v:03d}", "png": _png((v, 9, 9)), "json": {"view": v}} for v in range(2)]
        for aid in "ab"
    }
    for aid, samples in parts.items():
        render_shards.write_object_part(wdir, aid, samples)
    render_shards.write_object_failure(wdir, "x", {"asset_id": "x", "error": "boom"})
    record = render_shards.assemble_shard(tmp_path, spec, [{"asset_id": a} for a in "abx"], "gl", 2)
    tar = render_shards.tar_path(tmp_path, spec)
    assert shards.check(tar, expected_key="k") == record
    assert record["assets"] == ["b", "a"] and [f["asset_id"] for f in record["failures"]] == ["x"]
    direct = tmp_path / "direct.tar"
    with open(direct, "wb") as fh:
        shards.write_samples(fh, parts["b"] + parts["a"])
    assert tar.read_bytes() == direct.read_bytes()
    assert [k for k, _ in shards.iter_samples(tar)] == ["b_000", "b_001", "a_000", "a_001"]
    assert not wdir.exists()

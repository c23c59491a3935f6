import json
import os

import pytest

from ovt import io


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    io.atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_writer(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_atomic_dir_swaps_whole_folder(tmp_path):
    dest = tmp_path / "d"
    with io.atomic_dir(dest) as d:
        (d / "x").write_text("1")
    with pytest.raises(ValueError):
        with io.atomic_dir(dest) as d:
            (d / "y").write_text("2")
            raise ValueError
    assert sorted(os.listdir(dest)) == ["x"]
    with io.atomic_dir(dest) as d:
        (d / "z").write_text("3")
    assert sorted(os.listdir(dest)) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_stable_digest_ignores_key_order_but_not_values():
    assert io.stable_digest({"a": 1, "b": [1, 2]}) == io.stable_digest({"b": [1, 2], "a": 1})
    assert io.stable_digest({"a": 1}) != io.stable_digest({"a": 2})
    assert len(io.stable_digest("x", length=12)) == 12


def test_jsonl_roundtrip_and_append(tmp_path):
    p = tmp_path / "rows.jsonl"
    assert io.write_jsonl_atomic(p, [{"k": 1}, {"k": 2}]) == 2
    io.append_jsonl(p, {"k": 3})
    assert [r["k"] for r in io.read_jsonl(p)] == [1, 2, 3]
    assert list(io.iter_jsonl(p))[-1] == {"k": 3}


def test_sha256_file_matches_bytes(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(b"hello" * 1000)
    assert io.sha256_file(p) == io.sha256_bytes(b"hello" * 1000)

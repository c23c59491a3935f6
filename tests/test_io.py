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


def test_atomic_path_is_filled_by_name_and_renamed_only_on_success(tmp_path):
    np = pytest.importorskip("numpy")
    target = tmp_path / "part.npy"
    with io.atomic_path(target) as tmp:  # e.g. a memory-mapped array filled in place
        assert tmp.parent == tmp_path and not target.exists()
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype="float32", shape=(3, 2))
        arr[:] = 7
        arr.flush()
        del arr
    assert np.load(target).tolist() == [[7.0, 7.0]] * 3
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert np.load(target).shape == (3, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["part.npy"]  # no temp file left behind


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


@pytest.mark.parametrize(
    "umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)]
)
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        assert io.current_umask() == umask
        io.atomic_write_json(tmp_path / "a.json", {"a": 1})
        io.write_jsonl_atomic(tmp_path / "b.jsonl", [{"b": 2}])
        with io.atomic_dir(tmp_path / "shards") as d:
            (d / "x").write_text("x")
        plain = tmp_path / "plain.txt"
        plain.write_text("what open() gives")
    finally:
        os.umask(old)
    for name in ("a.json", "b.jsonl", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == file_mode, name
    assert (tmp_path / "shards").stat().st_mode & 0o777 == dir_mode


def test_explicit_perms_for_secrets(tmp_path):
    old = os.umask(0o022)
    try:
        io.atomic_write_bytes(tmp_path / "key", b"secret", perms=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600

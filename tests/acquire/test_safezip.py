import zipfile

import pytest

from ovt.acquire.candidate import ItemError
from ovt.acquire.safezip import Budget, check_member_name, read_member, safe_extract
from tests.acquire.fixtures import write_zip


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/passwd", "C:\\evil", "a\\..\\..\\evil", ""])
def test_unsafe_member_names_are_refused(name):
    with pytest.raises(ItemError) as exc:
        check_member_name(name)
    assert exc.value.reason == "unsafe_path"


def test_safe_names_are_normalised():
    assert str(check_member_name("a/./b//c.obj")) == "a/b/c.obj"


@pytest.mark.parametrize("evil", ["../evil.txt", "/abs_evil.txt", "sub/../../evil.txt"])
def test_crafted_archive_writes_nothing_outside(tmp_path, evil):
    z = write_zip(tmp_path / "x.zip", {"ok.txt": "fine", evil: "pwned"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with zipfile.ZipFile(z) as zf, pytest.raises(ItemError, match="unsafe_path"):
        safe_extract(zf, dest)
    # all-or-nothing: not even the safe member was written, and nothing escaped
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "abs_evil.txt").exists()


def test_symlink_entries_are_refused(tmp_path):
    z = write_zip(tmp_path / "x.zip", {"ok.txt": "fine"}, symlinks={"link": "/etc"})
    dest = tmp_path / "dest"
    with zipfile.ZipFile(z) as zf, pytest.raises(ItemError, match="symlink"):
        safe_extract(zf, dest)


def test_symlinked_destination_cannot_be_escaped_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    z = write_zip(tmp_path / "x.zip", {"sub/evil.txt": "pwned"})
    with zipfile.ZipFile(z) as zf, pytest.raises(ItemError, match="outside"):
        safe_extract(zf, dest)
    assert list(outside.iterdir()) == []


def test_safe_archive_extracts(tmp_path):
    z = write_zip(tmp_path / "x.zip", {"a/b.txt": "hello", "c.txt": "world"})
    with zipfile.ZipFile(z) as zf:
        written = safe_extract(zf, tmp_path / "dest")
    assert sorted(p.relative_to(tmp_path / "dest").as_posix() for p in written) == ["a/b.txt", "c.txt"]
    assert (tmp_path / "dest" / "a" / "b.txt").read_text() == "hello"


def test_zip_bomb_guard_counts_real_decompressed_bytes(tmp_path):
    z = write_zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * (3 << 20)})  # 3 MiB of zeros, compresses to ~3 KiB
    assert z.stat().st_size < 100_000
    with zipfile.ZipFile(z) as zf:
        with pytest.raises(ItemError, match="too_large"):
            safe_extract(zf, tmp_path / "dest", max_bytes=1 << 20)
        with pytest.raises(ItemError, match="too_large"):
            read_member(zf, zf.getinfo("zeros.bin"), Budget(1 << 20, "asset"))
        assert len(read_member(zf, zf.getinfo("zeros.bin"), Budget(4 << 20, "asset"))) == 3 << 20
    assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []

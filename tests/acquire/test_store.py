import pytest

from ovt.acquire.candidate import ItemError
from ovt.acquire.store import asset_dir, asset_id, commit, garbage_collect, list_files, stage_files


def test_asset_id_is_order_independent_and_excludes_attribution():
    a = {"m.obj": b"v", "m.mtl": b"k", "LICENSE.txt": b"by A"}
    b = {"LICENSE.txt": b"by B", "m.mtl": b"k", "m.obj": b"v"}
    assert asset_id(a, {"LICENSE.txt"}) == asset_id(b, {"LICENSE.txt"})
    assert asset_id(a) != asset_id(b)


def test_asset_id_depends_on_bytes_and_names():
    base = asset_id({"m.obj": b"v", "t.png": b"p"})
    assert asset_id({"m.obj": b"v", "t.png": b"q"}) != base  # texture bytes
    assert asset_id({"m.obj": b"v", "u.png": b"p"}) != base  # texture name (the MTL refers to it)
    # lengths are hashed too, so moving bytes between a file and its neighbour's name cannot collide
    assert asset_id({"m.obj": b"vt.png", "": b"p"}) != asset_id({"m.obj": b"v", "t.png": b"p"})
    assert len(base) == 64 and base == asset_id({"t.png": b"p", "m.obj": b"v"})


def test_stage_commit_and_gc(tmp_path):
    files = {"m.obj": b"v 0 0 0\n", "tex/t.png": b"p"}
    aid = asset_id(files)
    tmp = stage_files(tmp_path, aid, files)
    commit(tmp, asset_dir(tmp_path, aid))
    final = asset_dir(tmp_path, aid)
    assert final == tmp_path / "store" / aid[:2] / aid and list_files(final) == ["m.obj", "tex/t.png"]
    # committing the same content again is a no-op and leaves no temporary behind
    commit(stage_files(tmp_path, aid, files), final)
    assert sorted(p.name for p in final.parent.iterdir()) == [aid]
    assert garbage_collect(tmp_path, {aid}) == 0
    assert garbage_collect(tmp_path, set()) == 1
    assert not (tmp_path / "store" / aid[:2]).exists()


def test_stage_files_refuses_traversal(tmp_path):
    with pytest.raises(ItemError, match="unsafe_path"):
        stage_files(tmp_path, "ab" * 32, {"../evil": b"x"})
    assert not (tmp_path / "store" / "evil").exists()
    assert list((tmp_path / "store" / "ab").iterdir()) == []  # the temporary folder was removed

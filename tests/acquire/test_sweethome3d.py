import pytest

from ovt.acquire.candidate import AssetCandidate, ItemError, SourceError
from ovt.acquire.config import SweetHome3DParams
from ovt.acquire.properties import parse_properties
from ovt.acquire.sources.sweethome3d import INSTALL_HINT, SweetHome3DSource, find_libraries, parse_catalogue
from tests.acquire.fixtures import cube_obj, make_library, sh3f_item


def _source(*dirs, **kw) -> SweetHome3DSource:
    return SweetHome3DSource(SweetHome3DParams(search_paths=[str(d) for d in dirs], **kw))


def test_catalogue_fields_rotation_and_licence():
    text = (
        "license=Library licence\n\n"
        + sh3f_item(
            1,
            "Caf\\u00e9 table",
            "/lib/t/t.obj",
            category="Kitchen",
            modelRotation="1 0 0 0 0 1 0 -1 0",
            doorOrWindow="true",
        )
        + sh3f_item(2, "Lamp", "/lib/l/l.obj", license="Own licence", multiPartModel="false")
    )
    library, items = parse_catalogue(parse_properties(text))
    assert library["license"] == "Library licence"
    t, lamp = items
    assert t.name == "Café table" and t.category == "Kitchen" and t.tags == ("Seat", "Wood")
    assert t.model == "lib/t/t.obj" and t.multi_part and t.door_or_window
    assert t.rotation == ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
    assert t.dims_cm == {"width": 50.0, "depth": 40.0, "height": 90.0}
    assert t.licence == "Library licence" and t.creator == "Tester"
    assert lamp.licence == "Own licence" and not lamp.multi_part and lamp.rotation is None


@pytest.mark.parametrize(
    "bad",
    [
        {"modelRotation": "1 0 0 0 1 0"},
        {"modelRotation": "1 0 0 0 x 0 0 0 1"},
        {"modelRotation": "2 0 0 0 1 0 0 0 1"},
        {"modelRotation": "-1 0 0 0 1 0 0 0 1"},
        {"width": "wide"},
        {"model": "/../../evil.obj"},
        {"model": ""},
    ],
)
def test_malformed_item_is_an_item_error_not_a_crash(bad):
    text = sh3f_item(1, "Good", "/lib/a/a.obj") + sh3f_item(2, "Bad", **{"model": "/lib/b/b.obj", **bad})
    _, items = parse_catalogue(parse_properties(text))
    assert not isinstance(items[0], ItemError)
    assert isinstance(items[1], ItemError) and items[1].reason in ("bad_catalogue", "unsafe_path")
    assert "Bad" in items[1].item


def test_source_yields_candidates_with_files(lib_dir):
    cands = list(_source(lib_dir).candidates())
    assert [c.name for c in cands] == ["Chair 1", "Chair 2", "Chair 3"]
    c1 = cands[0]
    assert isinstance(c1, AssetCandidate)
    assert c1.source_ref == "TestLib:lib/chair1/chair1.obj" and c1.mesh == "chair1.obj"
    assert c1.licence == "Creative Commons Attribution 3.0" and c1.attribution == {"LICENSE.txt"}
    files = c1.load_files()
    assert sorted(files) == ["LICENSE.txt", "chair1.mtl", "chair1.obj", "tex.png"]
    assert files["chair1.obj"].startswith(b"mtllib chair1.mtl")


def test_traversal_and_symlink_members_inside_a_model_folder_fail_that_item_only(tmp_path):
    d = tmp_path / "f"
    extra = sh3f_item(10, "Evil sofa", "/lib/evil/evil.obj") + sh3f_item(11, "Linked sofa", "/lib/link/link.obj")
    make_library(
        d,
        n_chairs=1,
        extra_items=extra,
        extra_entries={
            "lib/evil/evil.obj": cube_obj(),
            "lib/evil/../../../outside.txt": "x",
            "lib/link/link.obj": cube_obj(),
        },
        symlinks={"lib/link/tex.png": "/etc/passwd"},
    )
    cands = {c.name: c for c in _source(d).candidates()}
    assert sorted(cands["Chair 1"].load_files()) == ["LICENSE.txt", "chair1.mtl", "chair1.obj", "tex.png"]
    for name in ("Evil sofa", "Linked sofa"):
        with pytest.raises(ItemError) as exc:
            cands[name].load_files()
        assert exc.value.reason == "unsafe_path"
    assert not (tmp_path / "outside.txt").exists()


def test_per_asset_zip_bomb_guard(tmp_path):
    d = tmp_path / "f"
    extra = sh3f_item(10, "Huge box", "/lib/huge/huge.obj")
    make_library(d, n_chairs=0, extra_items=extra, extra_entries={"lib/huge/huge.obj": b"#" * (2 << 20)})
    (cand,) = list(_source(d, max_asset_bytes=1 << 20).candidates())
    with pytest.raises(ItemError, match="too_large"):
        cand.load_files()


def test_missing_package_explains_how_to_install(tmp_path):
    with pytest.raises(SourceError) as exc:
        list(_source(tmp_path / "nowhere", tmp_path).candidates())
    assert "apt-get install -y sweethome3d-furniture" in str(exc.value) and "dpkg-deb -x" in str(exc.value)
    assert INSTALL_HINT in str(exc.value)


def test_search_path_order_and_library_selection(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_library(a, stem="Lib", n_chairs=1)
    make_library(b, stem="Lib", n_chairs=2)
    make_library(b, stem="Other", n_chairs=1)
    assert [p.parent for p in find_libraries([str(a), str(b)], [])] == [a, b]
    assert find_libraries([str(a), str(b)], ["Other"]) == [b / "Other.sh3f"]
    with pytest.raises(SourceError, match="Missing"):
        find_libraries([str(a)], ["Missing"])


def test_a_non_zip_library_is_a_source_error(tmp_path):
    (tmp_path / "Broken.sh3f").write_bytes(b"not a zip")
    with pytest.raises(SourceError, match="Broken.sh3f"):
        list(_source(tmp_path).candidates())

import json

import pytest

from ovt.acquire.candidate import ItemError
from ovt.acquire.meshdeps import collect_files, is_absolute, sanitize
from tests.acquire.fixtures import cube_obj, make_library, png_bytes, sh3f_item
from tests.acquire.mixed_folder import dae_bytes


def _reader(files):
    def read(rel):
        if rel not in files:
            raise FileNotFoundError(rel)
        return files[rel]

    return read


@pytest.mark.parametrize(
    "ref,absolute",
    [
        ("/home/x/t.png", True),
        ("C:/t.png", True),
        ("f:\\t.png", True),
        ("file:///t.png", True),
        ("t.png", False),
        ("../t.png", False),
    ],
)
def test_is_absolute(ref, absolute):
    assert is_absolute(ref) is absolute


def test_missing_mtl_and_texture_are_not_errors():
    files = {"a/m.obj": b"mtllib m.mtl gone.mtl\nv 0 0 0\n", "a/m.mtl": b"newmtl x\nmap_Kd gone.png\n"}
    got = collect_files("a/m.obj", _reader(files))
    assert sorted(got) == ["m.mtl", "m.obj"]
    assert sanitize("m.obj", got)[1] == ["gone.mtl", "gone.png"]


def test_sibling_folder_files_move_under_ext_and_references_are_rewritten():
    files = {
        "a/m.obj": b"mtllib ../mats/m.mtl\nv 0 0 0\n",
        "mats/m.mtl": b"newmtl x\nmap_Kd -s 1 1 1 ../tex/t.png\n",
        "tex/t.png": b"png",
    }
    got = collect_files("a/m.obj", _reader(files))
    assert sorted(got) == ["_ext/tex/t.png", "_ext_mats_m.mtl", "m.obj"]
    assert got["m.obj"].startswith(b"mtllib _ext_mats_m.mtl\n")
    assert b"map_Kd -s 1 1 1 _ext/tex/t.png" in got["_ext_mats_m.mtl"]
    assert sanitize("m.obj", got)[1] == []


def test_a_sibling_mtl_and_texture_render_textured(tmp_path):
    from ovt.render.normalize import load_normalised

    files = {
        "a/m.obj": cube_obj(mtl="../mats/m.mtl", textured=True).encode(),
        "mats/m.mtl": b"newmtl m\nKd 1 1 1\nmap_Kd ../tex/t.png\n",
        "tex/t.png": png_bytes(),
    }
    for rel, data in collect_files("a/m.obj", _reader(files)).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    assert any(p.texture is not None for p in load_normalised(tmp_path / "m.obj").parts)


def test_gltf_sibling_buffer_is_rewritten_and_a_missing_buffer_is_fatal():
    gltf = json.dumps({"buffers": [{"uri": "../bin/b.bin"}], "images": [{"uri": "gone.png"}]}).encode()
    got = collect_files("g/m.gltf", _reader({"g/m.gltf": gltf, "bin/b.bin": b"\0"}))
    assert sorted(got) == ["_ext/bin/b.bin", "m.gltf"]
    assert json.loads(got["m.gltf"])["buffers"][0]["uri"] == "_ext/bin/b.bin"
    assert sanitize("m.gltf", got)[1] == ["gone.png"]
    with pytest.raises(ItemError, match="missing_file"):
        collect_files("g/m.gltf", _reader({"g/m.gltf": gltf}))


def test_escapes_are_refused_everywhere():
    for files in (
        {"a/m.obj": b"mtllib ../../x.mtl\n"},
        {"m.dae": dae_bytes("../secret.png")},
        {"m.gltf": json.dumps({"images": [{"uri": "../../x.png"}]}).encode()},
    ):
        mesh = next(iter(files))
        with pytest.raises(ItemError, match="unsafe_path"):
            collect_files(mesh, _reader(files))


def test_absolute_references_are_dropped_from_obj_mtl_dae_and_gltf():
    files, missing = sanitize(
        "m.obj",
        {
            "m.obj": b"mtllib /abs/m.mtl\nmtllib m.mtl\n",
            "m.mtl": b"newmtl a\nmap_Kd C:\\tex\\wood.jpg\nmap_Kd ok.png\n",
            "ok.png": png_bytes(),
        },
    )
    assert missing == ["/abs/m.mtl", "C:\\tex\\wood.jpg"]
    assert files["m.obj"].startswith(b"# reference dropped") and b"\nmtllib m.mtl" in files["m.obj"]
    assert b"# reference dropped (absolute path): map_Kd C:\\tex\\wood.jpg" in files["m.mtl"]
    assert b"\nmap_Kd ok.png" in files["m.mtl"]

    dae, missing = sanitize("m.dae", {"m.dae": dae_bytes("/home/me/duck.png")})
    assert missing == ["/home/me/duck.png"] and b"/home/me" not in dae["m.dae"]

    gltf = json.dumps({"images": [{"uri": "file:///etc/x.png"}, {"uri": "t.png"}]}).encode()
    out, missing = sanitize("m.gltf", {"m.gltf": gltf, "t.png": b"p"})
    images = json.loads(out["m.gltf"])["images"]
    assert missing == ["file:///etc/x.png"] and images[0]["uri"].startswith("data:image/png")
    assert images[1]["uri"] == "t.png"


def test_sweet_home_3d_mtl_with_absolute_texture_is_accepted_untextured(tmp_path):
    """Some libraries of the real package name textures like `map_Kd f:/images/textures/wood/tree.jpg`."""
    from ovt.acquire.config import AcquireParams
    from ovt.acquire.stage import AcquirePaths, run
    from ovt.io import read_jsonl

    extra = sh3f_item(30, "Technical table", "/t/t/t.obj")
    entries = {
        "t/t/t.obj": cube_obj(size=2, mtl="t.mtl", textured=True),
        "t/t/t.mtl": "newmtl m\nKd 1 1 1\nmap_Kd f:/images/textures/wood/tree.jpg\n",
    }
    make_library(tmp_path / "lib", n_chairs=1, extra_items=extra, extra_entries=entries)
    run(
        AcquireParams(sweethome3d={"search_paths": [str(tmp_path / "lib")]}, labels={"min_per_class": 1}),
        seed=0,
        paths=AcquirePaths(tmp_path / "out"),
        progress=False,
    )
    row = next(r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl") if r["name"] == "Technical table")
    assert row["missing_files"] == ["f:/images/textures/wood/tree.jpg"] and row["textured"] is False
    mtl = next(f for f in row["files"] if f.endswith(".mtl"))
    assert "# reference dropped" in (tmp_path / "out" / mtl).read_text()


def _mtllibs_by_line(data: bytes) -> list[str]:
    # the rule applied to every line (what the regex pre-selection must reproduce)
    from ovt.acquire.meshdeps import _lines

    return [lib for line in _lines(data) if line.lower().startswith("mtllib") for lib in line.split()[1:]]


@pytest.mark.parametrize(
    "data",
    [
        b"mtllib a.mtl\nv 0 0 0\n",
        b"v 0 0 0\r\nMTLLIB  a.mtl b.mtl \r\nf 1 1 1\r\n",
        b"  mtllib\ta.mtl\n# mtllib commented.mtl\nv 1 2 3 # mtllib trailing.mtl\n",
        b"mtllibx.mtl y.mtl\nmtllib\n\n",
        b"v 0 0 0\rmtllib old-mac.mtl\rf 1 1 1\r",  # lone CR line breaks: the slow path
        b"mtllib a.mtl\x0cmtllib b.mtl\n",  # form feed is a line break for str.splitlines
        "mtllib caf\u00e9.mtl\n\u2028mtllib sep.mtl\n".encode(),
        b"\xff\xfe mtllib bad-utf8.mtl\nmtllib ok.mtl\n",
        b"",
    ],
)
def test_mtllib_scan_matches_the_line_rule(data):
    from ovt.acquire.meshdeps import _obj_mtllibs

    assert _obj_mtllibs(data) == _mtllibs_by_line(data)

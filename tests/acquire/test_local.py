import pytest

from ovt.acquire.candidate import ItemError, SourceError
from ovt.acquire.config import LocalParams
from ovt.acquire.meshdeps import collect_files
from ovt.acquire.sources.local import LocalSource
from tests.acquire.fixtures import MTL_TEXTURED, cube_obj, png_bytes


def _folder(tmp_path, csv_text: str):
    root = tmp_path / "meshes"
    (root / "chairs" / "tex").mkdir(parents=True)
    (root / "chairs" / "red.obj").write_text(cube_obj(mtl="red.mtl", textured=True))
    (root / "chairs" / "red.mtl").write_text(MTL_TEXTURED.replace("tex.png", "tex/red.png"))
    (root / "chairs" / "tex" / "red.png").write_bytes(png_bytes())
    (root / "box.ply").write_bytes(
        b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        b"property float z\nelement face 1\nproperty list uchar int vertex_indices\n"
        b"end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"
    )
    (root / "assets.csv").write_text(csv_text)
    return root


def test_folder_and_csv(tmp_path):
    root = _folder(tmp_path, "path,category,name\nchairs/red.obj,Seats,Red chair\nbox.ply,Misc,\n")
    src = LocalSource(LocalParams(root=str(root), licence="CC0", creator="me"))
    red, box = list(src.candidates())
    assert (red.name, red.category, red.mesh, red.source_ref) == ("Red chair", "Seats", "red.obj", "chairs/red.obj")
    assert red.licence == "CC0" and red.creator == "me"
    assert sorted(red.load_files()) == ["red.mtl", "red.obj", "tex/red.png"]
    assert box.name == "box" and sorted(box.load_files()) == ["box.ply"]


def test_bad_rows_and_missing_references_are_item_errors(tmp_path):
    root = _folder(tmp_path, "path,category\n../outside.obj,X\n,X\nchairs/red.obj,\nmissing.obj,X\n")
    out = list(LocalSource(LocalParams(root=str(root))).candidates())
    assert [type(o).__name__ for o in out] == ["ItemError", "ItemError", "ItemError", "AssetCandidate"]
    assert [o.reason for o in out[:3]] == ["unsafe_path", "bad_csv", "bad_csv"]
    with pytest.raises(ItemError, match="missing_file"):
        out[3].load_files()


def test_mtl_reference_outside_the_mesh_folder_is_refused(tmp_path):
    files = {"a/m.obj": b"mtllib m.mtl\nv 0 0 0\n", "a/m.mtl": b"newmtl x\nmap_Kd ../../secret.png\n"}
    with pytest.raises(ItemError, match="unsafe_path"):
        collect_files("a/m.obj", lambda rel: files[rel])


def test_gltf_buffers_and_images(tmp_path):
    gltf = (
        b'{"buffers":[{"uri":"b%20in.bin"},{"uri":"data:application/octet-stream;base64,AA=="}],'
        b'"images":[{"uri":"t.png"}]}'
    )
    files = {"m.gltf": gltf, "b in.bin": b"\0", "t.png": b"p"}
    assert sorted(collect_files("m.gltf", lambda rel: files[rel])) == ["b in.bin", "m.gltf", "t.png"]


@pytest.mark.parametrize("header", ["file,category\n", "path,category,colour\n", "path\n"])
def test_bad_csv_header_names_the_columns(tmp_path, header):
    root = _folder(tmp_path, header + "x,y\n")
    with pytest.raises(SourceError, match="header must be path,category"):
        list(LocalSource(LocalParams(root=str(root))).candidates())


def test_missing_root_or_csv(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        LocalSource(LocalParams(root=str(tmp_path / "nope")))
    with pytest.raises(SourceError, match="acquire.local.csv"):
        list(LocalSource(LocalParams(root=str(tmp_path))).candidates())


@pytest.mark.slow
def test_s3_prefix_against_real_seaweedfs(tmp_path, monkeypatch):
    """The same folder uploaded to the project's real local S3 (SeaweedFS) reads back identically."""
    import boto3

    from ovt.services.testing import local_stack

    root = _folder(tmp_path, "path,category,name\nchairs/red.obj,Seats,Red chair\nbox.ply,Misc,\n")
    with local_stack(tmp_path / "state", names=("s3",)) as mgr:
        for key, value in mgr.client_env().items():
            if key.startswith("AWS_"):
                monkeypatch.setenv(key, value)
        bucket = mgr.settings.dvc_bucket
        s3 = boto3.client("s3", endpoint_url=mgr.settings.s3_url)
        for p in sorted(root.rglob("*")):
            if p.is_file():
                s3.put_object(Bucket=bucket, Key=f"meshes/{p.relative_to(root).as_posix()}", Body=p.read_bytes())
        src = LocalSource(LocalParams(root=f"s3://{bucket}/meshes", s3_endpoint_url=mgr.settings.s3_url))
        red, box = list(src.candidates())
        local_red, _ = list(LocalSource(LocalParams(root=str(root))).candidates())
        assert red.load_files() == local_red.load_files()
        assert sorted(box.load_files()) == ["box.ply"]
        missing = LocalSource(LocalParams(root=f"s3://{bucket}/nothing-here", s3_endpoint_url=mgr.settings.s3_url))
        with pytest.raises(SourceError, match="acquire.local.csv"):
            list(missing.candidates())
        no_bucket = LocalSource(LocalParams(root="s3://no-such-bucket-ovt/x", s3_endpoint_url=mgr.settings.s3_url))
        with pytest.raises(SourceError, match="no-such-bucket-ovt"):
            list(no_bucket.candidates())

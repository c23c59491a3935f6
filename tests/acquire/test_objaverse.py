"""The objaverse adapter against the real `objaverse` package, with only its downloads served from local fixtures.

The package fetches everything with `urllib.request.urlretrieve` from huggingface.co into `objaverse._VERSIONED_PATH`;
we point that folder at tmp_path and answer urlretrieve from a fixture tree laid out like the Hugging Face dataset.
"""

import gzip
import json
import shutil
import urllib.error
import urllib.request

import objaverse
import pytest
import trimesh

from ovt.acquire.candidate import SourceError
from ovt.acquire.config import AcquireParams, ObjaverseParams
from ovt.acquire.sources.objaverse_lvis import ObjaverseSource
from ovt.acquire.stage import AcquirePaths, run

HF = "https://huggingface.co/datasets/allenai/objaverse/resolve/main/"
UIDS = {"chair": ["c3", "c1", "c2"], "mug": ["m1", "c1"], "sofa": ["s1"]}


def _gz(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        json.dump(obj, fh)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    remote = tmp_path / "hf"
    uids = sorted({u for us in UIDS.values() for u in us})
    paths = {u: f"glbs/000-00{i % 2}/{u}.glb" for i, u in enumerate(uids)}
    for i, u in enumerate(uids):
        p = remote / paths[u]
        p.parent.mkdir(parents=True, exist_ok=True)
        trimesh.creation.box(extents=(1 + i, 1, 1)).export(p)  # distinct bytes per object
    _gz(remote / "object-paths.json.gz", paths)
    _gz(remote / "lvis-annotations.json.gz", UIDS)
    for shard in ("000-000", "000-001"):
        _gz(
            remote / "metadata" / f"{shard}.json.gz",
            {
                u: {
                    "uid": u,
                    "name": f"Object {u}",
                    "license": "by",
                    "user": {"username": f"user_{u}"},
                    "tags": [{"name": "furniture"}],
                }
                for u in uids
                if paths[u].split("/")[1] == shard
            },
        )

    downloads: list[str] = []

    def fake_urlretrieve(url, filename):
        if not url.startswith(HF) or not (remote / url[len(HF) :]).is_file():
            raise urllib.error.URLError(f"no fixture for {url}")
        downloads.append(url[len(HF) :])
        shutil.copyfile(remote / url[len(HF) :], filename)
        return filename, None

    monkeypatch.setattr(objaverse, "_VERSIONED_PATH", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlretrieve", fake_urlretrieve)
    return downloads


def test_candidates_from_lvis_categories(hub):
    src = ObjaverseSource(ObjaverseParams(lvis_categories=["chair", "mug"], max_per_category=2))
    cands = list(src.candidates())
    # chair: first 2 of the sorted uids; mug: m1 (c1 was already taken by chair)
    assert [(c.category, c.source_ref) for c in cands] == [("chair", "c1"), ("chair", "c2"), ("mug", "m1")]
    c = cands[0]
    assert c.name == "Object c1" and c.licence == "CC-BY 4.0" and c.creator == "user_c1"
    assert c.tags == ("furniture",) and c.label_hint == "chair" and c.rotation is None
    files = c.load_files()
    assert list(files) == ["c1.glb"] and files["c1.glb"][:4] == b"glTF"
    assert "glbs/000-000/c1.glb" in hub and "glbs/000-001/c3.glb" not in hub  # only selected objects fetched


def test_second_use_reads_the_package_cache(hub):
    src = ObjaverseSource(ObjaverseParams(lvis_categories=["sofa"]))
    list(src.candidates())
    n = len(hub)
    list(src.candidates())
    assert len(hub) == n


def test_unknown_category_and_no_network(hub, monkeypatch, tmp_path):
    with pytest.raises(SourceError, match="not LVIS categories"):
        list(ObjaverseSource(ObjaverseParams(lvis_categories=["unicorn"])).candidates())

    def offline(url, filename):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    monkeypatch.setattr(objaverse, "_VERSIONED_PATH", str(tmp_path / "empty-cache"))
    with pytest.raises(SourceError, match="huggingface.co"):
        list(ObjaverseSource(ObjaverseParams(lvis_categories=["chair"])).candidates())


def test_stage_with_objaverse_labels_from_lvis(hub, tmp_path):
    cfg = AcquireParams(
        sources=["objaverse"], objaverse={"lvis_categories": ["chair", "sofa"]}, labels={"min_per_class": 3}
    )
    stats = run(cfg, seed=0, paths=AcquirePaths(tmp_path / "assets"), progress=False)
    assert stats["by_label"] == {"_unlabelled": 1, "chair": 3}
    rows = [json.loads(line) for line in (tmp_path / "assets" / "manifest.jsonl").read_text().splitlines()]
    assert {r["source"] for r in rows} == {"objaverse"} and all(r["mesh"].endswith(".glb") for r in rows)
    assert all(r["n_faces"] == 12 for r in rows)

"""The stage end to end on tiny real assets: shards round-trip, idempotence, content keys, failure isolation,
resume after a real kill mid-shard."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovt.io import read_jsonl
from ovt.render import stage
from ovt.render.config import RenderParams
from ovt.render.images import decode_png
from ovt.shards import iter_samples, sample_json

from .conftest import (
    asset_row,
    write_broken,
    write_hanging,
    write_icosphere,
    write_manifest,
    write_marker_obj,
    write_sliver,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(
    image_size=48,
    rings=[{"elevation": 10, "n_azimuth": 4}],
    poles=True,
    objects_per_shard=2,
    workers=1,
    msaa=0,
    object_timeout_s=60,
)


def cfg(**kw) -> RenderParams:
    return RenderParams(**(SMALL | kw))


def test_shards_round_trip_and_manifest(assets, tmp_path):
    out = tmp_path / "renders"
    stats = stage.run(cfg(), seed=0, assets_dir=assets, out_dir=out, progress=False)
    assert stats["objects_ok"] == 3 and stats["views"] == 18 and stats["shards"] == 2
    manifest = read_jsonl(out / "manifest.jsonl")
    assert [m["img_id"] for m in manifest] == list(range(18))
    acquire = read_jsonl(assets / "manifest.jsonl")
    for m in manifest:
        assert m["obj_id"] == next(i for i, a in enumerate(acquire) if a["asset_id"] == m["asset_id"])
        assert m["path"] == f"./views/{m['asset_id']}/{m['view']:03d}.png"
        assert m["split"] == "train" and m["label"] in {"marker", "box", "ico"}
    samples = {}
    for tar in sorted((out / "shards").glob("shard-*.tar")):
        for key, members in iter_samples(tar):
            samples[key] = (members["png"], sample_json(key, members))
    assert set(samples) == {m["key"] for m in manifest}
    for m in manifest:
        png, meta = samples[m["key"]]
        img = decode_png(png)
        assert img.shape == (48, 48, 3) and img[0, 0].tolist() == [255, 255, 255]
        for k in ("asset_id", "view", "azimuth", "elevation", "distance", "fov", "canonical"):
            assert meta[k] == m[k]
        assert np.asarray(meta["pose"]).shape == (4, 4) and meta["light"]["ambient"] == 0.35
    recs = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("shard-*.json"))]
    assert [len(r["assets"]) for r in recs] == [2, 1] and all(r["n_views"] == 6 for r in recs)
    assert (out / "contact_sheet.png").stat().st_size > 1000
    assert read_jsonl(out / "failures.jsonl") == []
    assert not (out / "shards" / ".work").exists()


def test_second_run_does_nothing_and_param_change_rerenders(assets, tmp_path):
    out = tmp_path / "renders"
    stage.run(cfg(), seed=0, assets_dir=assets, out_dir=out, progress=False)
    tars = sorted((out / "shards").glob("*.tar"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tars}
    again = stage.run(cfg(workers=2, object_timeout_s=5), seed=0, assets_dir=assets, out_dir=out, progress=False)
    assert again["shards_rendered"] == 0 and again["objects_rendered"] == 0  # execution knobs are not in the key
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tars} == before
    changed = stage.run(cfg(background=(0.0, 0.0, 0.0)), seed=0, assets_dir=assets, out_dir=out, progress=False)
    assert changed["shards_rendered"] == 2 and changed["objects_rendered"] == 3
    # a texture edited in place (same asset id) re-renders exactly the shard that holds it
    box = next(assets.glob("store/box/*.png"))
    Image.new("RGB", (8, 8), (200, 0, 0)).save(box)
    edited = stage.run(cfg(background=(0.0, 0.0, 0.0)), seed=0, assets_dir=assets, out_dir=out, progress=False)
    box_id = next(r["asset_id"] for r in read_jsonl(assets / "manifest.jsonl") if r["name"] == "box")
    shard_of_box = next(
        json.loads(p.read_text())
        for p in (out / "shards").glob("shard-*.json")
        if box_id in json.loads(p.read_text())["assets"]
    )
    assert edited["shards_rendered"] == 1 and edited["objects_rendered"] == len(shard_of_box["assets"])
    front = next(m for m in read_jsonl(out / "manifest.jsonl") if m["asset_id"] == box_id and m["view"] == 0)
    png = dict((k, m["png"]) for k, m in iter_samples(out / front["shard"]))[front["key"]]
    centre = decode_png(png)[24, 24]
    assert centre[0] > 100 and centre[1] < 40  # the new red texture, not the old green one
    reseeded = stage.run(cfg(background=(0.0, 0.0, 0.0)), seed=1, assets_dir=assets, out_dir=out, progress=False)
    assert reseeded["shards_rendered"] == 2


def test_rerender_is_byte_identical(assets, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    stage.run(cfg(), seed=0, assets_dir=assets, out_dir=a, progress=False)
    stage.run(cfg(workers=2), seed=0, assets_dir=assets, out_dir=b, progress=False)
    for p in sorted((a / "shards").glob("*.tar")):
        assert p.read_bytes() == (b / "shards" / p.name).read_bytes()
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()


def test_broken_empty_and_hanging_objects_are_isolated(tmp_path):
    d = tmp_path / "assets"
    rows = [
        asset_row(d, write_marker_obj(d / "store" / "good"), "good"),
        asset_row(d, write_broken(d / "store" / "broken"), "broken"),
        asset_row(d, write_sliver(d / "store" / "sliver"), "sliver"),
        asset_row(d, write_hanging(d / "store" / "hang"), "hang"),
        asset_row(d, write_icosphere(d / "store" / "ico"), "ico"),
    ]
    write_manifest(d, rows)
    out = tmp_path / "renders"
    t0 = time.perf_counter()
    stats = stage.run(cfg(object_timeout_s=4), seed=0, assets_dir=d, out_dir=out, progress=False)
    assert time.perf_counter() - t0 < 60
    names = {r["asset_id"]: r["name"] for r in rows}
    failures = {names[f["item"]]: f for f in read_jsonl(out / "failures.jsonl")}
    assert set(failures) == {"broken", "sliver", "hang"}
    assert failures["hang"]["error"] == "Timeout"
    assert failures["sliver"]["error"] == "EmptyRender"
    assert failures["broken"]["error"] == "MeshError"
    assert all(f["stage"] == "render" and f["detail"] for f in failures.values())
    assert stats["objects_ok"] == 2 and stats["objects_failed"] == 3
    assert {m["name"] for m in read_jsonl(out / "manifest.jsonl")} == {"good", "ico"}


def test_missing_manifest_and_bad_rows_are_named(tmp_path):
    with pytest.raises(stage.RenderError, match="manifest not found"):
        stage.run(cfg(), seed=0, assets_dir=tmp_path, out_dir=tmp_path / "o", progress=False)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"asset_id": "x"}) + "\n")
    with pytest.raises(stage.RenderError, match="row 1 lacks mesh"):
        stage.run(cfg(), seed=0, assets_dir=tmp_path, out_dir=tmp_path / "o", progress=False)


def test_nothing_rendered_raises(tmp_path):
    d = tmp_path / "assets"
    write_manifest(d, [asset_row(d, write_broken(d / "store" / "b"), "b")])
    with pytest.raises(stage.RenderError, match="no asset rendered"):
        stage.run(cfg(), seed=0, assets_dir=d, out_dir=tmp_path / "o", progress=False)


def test_resume_after_kill_mid_shard(tmp_path):
    """Kill the stage (and its worker) while it hangs on the 3rd object of a shard; the rerun must reuse the two
    finished objects, never read the half-written shard, and finish only what is missing."""
    d = tmp_path / "assets"
    rows = [
        asset_row(d, write_marker_obj(d / "store" / "a"), "a"),
        asset_row(d, write_icosphere(d / "store" / "b"), "b"),
        asset_row(d, write_hanging(d / "store" / "h"), "h"),
    ]
    for i, r in enumerate(rows):  # force the order inside the shard: the hanging object comes last
        r["asset_id"] = f"{i:02d}" + r["asset_id"][2:]
    write_manifest(d, rows)
    out = tmp_path / "renders"
    script = tmp_path / "run.py"
    params = SMALL | {"objects_per_shard": 3, "object_timeout_s": 600}
    script.write_text(
        textwrap.dedent(f"""
        from ovt.render import stage
        from ovt.render.config import RenderParams
        if __name__ == "__main__":
            stage.run(RenderParams(**{params!r}), seed=0, assets_dir={str(d)!r}, out_dir={str(out)!r},
                      progress=False)
    """)
    )
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = out / "shards" / ".work"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("*/*.tar"))) < 2:
        time.sleep(0.2)
    assert len(list(work.glob("*/*.tar"))) == 2, "the first two objects never finished"
    time.sleep(0.5)
    assert proc.poll() is None  # still stuck on the hanging object
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    shards = out / "shards"
    assert not (shards / "shard-00000.json").exists() and not (shards / "shard-00000.tar").exists()
    # a torn tar from some earlier crash must not be trusted either: no completion record -> redone
    (shards / "shard-00000.tar").write_bytes(b"torn")
    stats = stage.run(
        RenderParams(**(params | {"object_timeout_s": 3})), seed=0, assets_dir=d, out_dir=out, progress=False
    )
    assert stats["objects_resumed"] == 2 and stats["objects_rendered"] == 0 and stats["objects_failed"] == 1
    assert stats["views"] == 12
    keys = [k for k, _ in iter_samples(shards / "shard-00000.tar")]
    assert len(keys) == 12 and not work.exists()

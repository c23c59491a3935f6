"""The Dask executor writes the same outputs as the stage's own worker lanes: on a local cluster sharing the disk,
and on separate worker processes (own working folders, no shared paths) that exchange assets and shards with the
stage only through S3 (a real local SeaweedFS)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from ovt.render import stage  # noqa: E402
from ovt.render.config import RenderParams  # noqa: E402
from ovt.render.executors import Scratch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(
    image_size=32,
    rings=[{"elevation": 10, "n_azimuth": 3}],
    poles=False,
    objects_per_shard=1,
    workers=2,
    msaa=0,
    object_timeout_s=120,
)


def _outputs(out: Path) -> dict:
    files = {p.name: p.read_bytes() for p in sorted((out / "shards").glob("shard-*.tar"))}
    files["manifest.jsonl"] = (out / "manifest.jsonl").read_bytes()
    return files


@pytest.fixture
def spawn_path(monkeypatch):
    # spawned Dask workers import `ovt` by name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dask_local_cluster_matches_processes(assets, tmp_path, spawn_path):
    local = tmp_path / "local"
    stage.run(RenderParams(**SMALL), seed=0, assets_dir=assets, out_dir=local, progress=False)
    fanned = tmp_path / "dask"
    stats = stage.run(RenderParams(**SMALL, executor="dask"), seed=0, assets_dir=assets, out_dir=fanned, progress=False)
    assert stats["shards_rendered"] == 3 and stats["objects_ok"] == 3
    assert _outputs(fanned) == _outputs(local)
    again = stage.run(RenderParams(**SMALL, executor="dask"), seed=0, assets_dir=assets, out_dir=fanned, progress=False)
    assert again["shards_rendered"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stack(tmp_path):
    from ovt.services.testing import local_stack

    with local_stack(tmp_path / "state", names=("s3",)) as mgr:
        yield mgr


@pytest.fixture
def remote_cluster(tmp_path, stack):
    """A Dask scheduler and two workers as separate processes, each in its own working folder, with S3
    credentials in their environment (as a remote worker would have) and no path into the test's folders."""
    from ovt.services.definitions import s3_env

    port = _free_port()
    env = {**os.environ, **s3_env(stack.settings), "PYTHONPATH": str(REPO)}
    dask = str(Path(sys.executable).with_name("dask"))
    procs = []
    try:
        sched_dir = tmp_path / "scheduler"
        sched_dir.mkdir()
        procs.append(
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                cwd=sched_dir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for i in range(2):
            wd = tmp_path / f"worker{i}"
            wd.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        f"tcp://127.0.0.1:{port}",
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                        "--local-directory",
                        str(wd),
                    ],
                    cwd=wd,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from dask.distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=120) as c:
            c.wait_for_workers(2, timeout=180)
        yield f"tcp://127.0.0.1:{port}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_remote_workers_exchange_through_s3(assets, tmp_path, stack, remote_cluster, monkeypatch):
    from ovt.services.definitions import s3_client, s3_env

    for k, v in s3_env(stack.settings).items():
        monkeypatch.setenv(k, v)
    bucket = "ovt-render-scratch"
    client = s3_client(stack.settings)
    client.create_bucket(Bucket=bucket)
    local = tmp_path / "local"
    stage.run(RenderParams(**SMALL), seed=0, assets_dir=assets, out_dir=local, progress=False)

    # the stage runs in its own folder with relative paths: nothing it names resolves in a worker's folder
    work = tmp_path / "stage"
    work.mkdir()
    monkeypatch.chdir(work)
    rel_assets = os.path.relpath(assets, work)
    cfg = RenderParams(**SMALL, executor="dask", cluster_address=remote_cluster, scratch={"url": f"s3://{bucket}/run1"})
    stats = stage.run(cfg, seed=0, assets_dir=rel_assets, out_dir="renders", progress=False)
    assert stats["shards_rendered"] == 3 and stats["objects_ok"] == 3
    assert _outputs(work / "renders") == _outputs(local)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="run1/")["Contents"]]
    assert sum(k.startswith("run1/shards/") and k.endswith(".tar") for k in keys) == 3
    assert any(k.startswith("run1/assets/") and k.endswith(".mtl") for k in keys)
    # the workers' folders hold no shard: everything came back through S3
    assert not list((tmp_path / "worker0").rglob("shard-*.tar")) and not list((tmp_path / "worker1").rglob("*.tar"))

    # a shard finished remotely but lost locally is fetched back, not re-rendered
    (work / "renders" / "shards" / "shard-00001.json").unlink()
    again = stage.run(cfg, seed=0, assets_dir=rel_assets, out_dir="renders", progress=False)
    assert again["views_rendered"] == 0 and _outputs(work / "renders") == _outputs(local)
    assert Scratch.from_params(cfg.scratch).endpoint_url == stack.settings.s3_url

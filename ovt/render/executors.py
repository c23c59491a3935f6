"""How the render stage fans its shards out: chosen by `render.executor`, a plain executor inside the stage.

- `processes`: lanes of (thread + one long-lived render worker process) on this machine (`stage.local_executor`).
- `dask`: one task per shard on a dask.distributed cluster (`render.cluster_address`, or a local cluster of
  `render.workers` processes). Each Dask worker process keeps one renderer (one GL context) across its tasks.
  Without `render.scratch.url` the workers read the stage's asset paths and write into its output folder (shared
  disk). With it, nothing is shared but S3: the stage uploads each shard's assets (content-addressed by their
  bytes digest, uploaded once), a worker downloads them into its own temporary folder, renders the shard there and
  uploads the tar and its completion record; the stage downloads both into its output folder (tar first, record
  last, so a half-copied shard never passes the integrity check).

Every executor calls the same `RenderJob.run_shard`, so every one writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

from ovt.render.config import RenderParams, ScratchParams
from ovt.render.shards import ShardSpec, completed_record, tar_path

log = logging.getLogger(__name__)


def make_executor(cfg: RenderParams, *, progress: bool, assets_dir: Path):
    from ovt.render.stage import local_executor

    if cfg.executor == "processes":
        return local_executor(cfg.workers, progress)
    return dask_executor(cfg, assets_dir)


# ---- worker side (runs inside a Dask worker process) ----


class InProcessWorker:
    """The `RenderWorker` interface, rendering in the current process (a Dask worker is already a separate
    process; the cluster restarts one that dies)."""

    def __init__(self, cfg: RenderParams):
        from ovt.render.worker import make_renderer

        self.cfg = cfg
        self.renderer = make_renderer(cfg)

    def render(self, job):
        from ovt.render.worker import ObjectResult, render_object

        t0 = time.perf_counter()
        try:
            pngs, fg = render_object(self.renderer, self.cfg, job)
            return ObjectResult(job.asset_id, True, pngs, fg, seconds=time.perf_counter() - t0)
        except Exception as e:  # per-object failure: reported in the shard, the task goes on
            return ObjectResult(
                job.asset_id, False, error=type(e).__name__, detail=str(e)[:2000], seconds=time.perf_counter() - t0
            )

    def close(self) -> None:
        self.renderer.close()


_WORKERS: dict[str, InProcessWorker] = {}


def _worker_for(cfg_json: str) -> InProcessWorker:
    """One renderer per worker process and configuration: creating a GL context costs ~0.1 s and EGL state is
    per process."""
    if cfg_json not in _WORKERS:
        _WORKERS[cfg_json] = InProcessWorker(RenderParams.model_validate_json(cfg_json))
    return _WORKERS[cfg_json]


def render_shard_shared(job, spec: ShardSpec) -> dict:
    """Task: render one shard into the stage's own shards folder (shared disk)."""
    return job.run_shard(spec, _worker_for(job.cfg_json))


def render_shard_remote(job, spec: ShardSpec, scratch: dict) -> dict:
    """Task: fetch the shard's assets from S3, render in a private temporary folder, upload tar + record."""
    store = Scratch(**scratch)
    with tempfile.TemporaryDirectory(prefix="ovt-render-") as tmp_name:
        tmp = Path(tmp_name)
        rows = []
        for a in spec.assets:
            for rel in asset_files(a):
                store.download(store.asset_key(a, rel), tmp / "assets" / rel)
            rows.append({**a, "mesh_abs": str(tmp / "assets" / a["mesh"])})
        local = dataclasses.replace(job, shards_dir=str(tmp / "shards"))
        res = local.run_shard(ShardSpec(spec.index, tuple(rows), spec.key), _worker_for(job.cfg_json))
        tar = tar_path(tmp / "shards", spec)
        store.upload(tar, store.shard_key(spec, ".tar"))
        store.upload(tar.with_suffix(".json"), store.shard_key(spec, ".json"))
    return res


# ---- S3 scratch ----


def asset_files(row: dict) -> list[str]:
    """The mesh and every file the acquire row lists (MTL, textures), relative to the assets folder."""
    return sorted({row["mesh"], *(row.get("files") or [])})


@dataclasses.dataclass(frozen=True)
class Scratch:
    """An S3 prefix for assets in and shards out. Picklable: only the URL and endpoint travel to workers; each
    process builds its own client with its own credentials."""

    url: str
    endpoint_url: str | None = None

    @classmethod
    def from_params(cls, p: ScratchParams) -> Scratch:
        if p.url is None:  # callers build a Scratch only when render.scratch.url is set
            raise ValueError("render.scratch.url is not set: no S3 scratch space to use")
        endpoint = p.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        return cls(p.url, endpoint)

    @property
    def bucket(self) -> str:
        return self.url.removeprefix("s3://").split("/", 1)[0]

    @property
    def prefix(self) -> str:
        rest = self.url.removeprefix("s3://").split("/", 1)
        return rest[1].strip("/") if len(rest) > 1 else ""

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def asset_key(self, row: dict, rel: str) -> str:
        # keyed by the bytes digest the shard key includes: an asset edited in place gets a new key
        return self._key("assets", row["bytes_sha256"], rel)

    def shard_key(self, spec: ShardSpec, suffix: str) -> str:
        return self._key("shards", spec.key[:16], spec.name + suffix)

    @property
    def client(self):
        c = getattr(self, "_client", None)
        if c is None:
            import boto3
            from botocore.config import Config

            c = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
            )
            object.__setattr__(self, "_client", c)
        return c

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def upload(self, path: Path, key: str) -> None:
        self.client.upload_file(str(path), self.bucket, key)

    def download(self, key: str, dest: Path) -> None:
        from ovt.io import atomic_writer

        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(dest) as fh:
            self.client.download_fileobj(self.bucket, key, fh)

    def put_assets(self, specs: list[ShardSpec], assets_dir: Path) -> int:
        """Upload every file of the shards' assets that is not there yet; returns how many were uploaded."""
        n = 0
        for spec in specs:
            for a in spec.assets:
                for rel in asset_files(a):
                    key = self.asset_key(a, rel)
                    if not self.exists(key):
                        self.upload(assets_dir / rel, key)
                        n += 1
        return n

    def fetch_shard(self, spec: ShardSpec, shards_dir: Path) -> dict | None:
        """Copy a finished shard into the stage's folder: tar first, then its record (the completion marker)."""
        tar = tar_path(shards_dir, spec)
        self.download(self.shard_key(spec, ".tar"), tar)
        self.download(self.shard_key(spec, ".json"), tar.with_suffix(".json"))
        return completed_record(shards_dir, spec)


# ---- stage side ----


def _client(cfg: RenderParams):
    from dask.distributed import Client, LocalCluster

    if cfg.cluster_address:
        return Client(cfg.cluster_address), None
    cluster = LocalCluster(
        n_workers=cfg.workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    return Client(cluster), cluster


def dask_executor(cfg: RenderParams, assets_dir: Path):
    try:
        import distributed  # noqa: F401
    except ImportError as e:
        raise RuntimeError("render.executor=dask needs dask.distributed (pip install distributed)") from e

    def execute(specs: list[ShardSpec], job) -> list[dict]:
        if not specs:
            return []
        from dask.distributed import as_completed

        shards_dir = Path(job.shards_dir)
        scratch = Scratch.from_params(cfg.scratch) if cfg.scratch.url else None
        results, todo = [], list(specs)
        if scratch is not None:
            # a shard a previous run finished remotely but never copied back: fetch it instead of re-rendering
            for spec in list(todo):
                if scratch.exists(scratch.shard_key(spec, ".json")) and scratch.fetch_shard(spec, shards_dir):
                    todo.remove(spec)
                    results.append(
                        {
                            "shard": spec.name,
                            "skipped": True,
                            "rendered": 0,
                            "resumed": 0,
                            "failed": 0,
                            "views": 0,
                            "seconds": 0.0,
                        }
                    )
            uploaded = scratch.put_assets(todo, Path(assets_dir))
            log.info("render: %d asset files uploaded to %s", uploaded, scratch.url)
        if not todo:
            return results
        client, cluster = _client(cfg)
        try:
            if scratch is None:
                futures = client.map(render_shard_shared, [job] * len(todo), todo, pure=False)
            else:
                sc = {"url": scratch.url, "endpoint_url": scratch.endpoint_url}
                futures = client.map(render_shard_remote, [job] * len(todo), todo, [sc] * len(todo), pure=False)
            by_future = dict(zip(futures, todo))
            for fut in as_completed(futures):
                res = fut.result()
                if scratch is not None and scratch.fetch_shard(by_future[fut], shards_dir) is None:
                    raise RuntimeError(
                        f"{by_future[fut].name}: the copy fetched from {scratch.url} fails the shard integrity check"
                    )
                results.append(res)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return results

    return execute

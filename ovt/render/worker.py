"""Render worker processes: one long-lived process per lane, one renderer (one GL context) per process.

Why a process per lane rather than rendering in the stage process: EGL contexts do not survive fork (we use the
`spawn` start method), and a per-object timeout must be able to stop *any* hang, including one inside C code or a
blocking file read. The parent sends one object at a time over a pipe and waits at most `object_timeout_s`; on a
timeout or a dead worker it kills the process, reports the object as failed and starts a fresh worker.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import numpy as np

from ovt.render.cameras import View
from ovt.render.config import RenderParams, default_blender_python
from ovt.render.images import encode_png, foreground_fraction

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 180.0


class EmptyRender(RuntimeError):
    """The object rendered (almost) no foreground pixels."""


@dataclass
class ObjectJob:
    asset_id: str
    mesh: str  # absolute path
    rotation: list | None
    views: list[View]
    light: dict


@dataclass
class ObjectResult:
    asset_id: str
    ok: bool
    pngs: list[bytes] = field(default_factory=list)
    foreground: list[float] = field(default_factory=list)
    error: str = ""
    detail: str = ""
    seconds: float = 0.0


def make_renderer(cfg: RenderParams):
    if cfg.backend == "gl":
        from ovt.render.gl import GLRenderer

        return GLRenderer(cfg.image_size, cfg.msaa)
    from ovt.render.blender import BlenderRenderer

    return BlenderRenderer(
        default_blender_python(cfg.blender),
        cfg.image_size,
        cfg.blender.samples,
        cfg.blender.threads,
        timeout_s=cfg.object_timeout_s,
    )


@functools.lru_cache(maxsize=8)
def _identity(cfg_json: str) -> str:
    cfg = RenderParams.model_validate_json(cfg_json)
    if cfg.backend == "gl":
        from ovt.render.gl import GLRenderer

        r = GLRenderer(16, 0)  # a throw-away context just to read the driver's version strings
        try:
            return f"gl: {r.version}"
        finally:
            r.close()
    return f"blender: {make_renderer(cfg).version}"


def renderer_identity(cfg: RenderParams) -> str:
    """Renderer name + version (driver included): part of every shard's content key."""
    return _identity(cfg.model_dump_json())


def render_object(renderer, cfg: RenderParams, job: ObjectJob) -> tuple[list[bytes], list[float]]:
    """Render + check + encode one object inside a worker. Raises on any per-object failure."""
    if cfg.backend == "gl":
        from ovt.render.normalize import load_normalised

        images = renderer.render(
            load_normalised(job.mesh, job.rotation),
            job.views,
            job.light,
            background=None if cfg.transparent else cfg.background,
        )
    else:
        images = renderer.render_file(job.mesh, job.rotation, job.views, job.light)
    fg = [foreground_fraction(im) for im in images]
    if float(np.mean(fg)) < cfg.min_foreground:
        raise EmptyRender(f"mean foreground fraction {np.mean(fg):.5f} < min_foreground {cfg.min_foreground}")
    pngs = [
        encode_png(
            im,
            transparent=cfg.transparent,
            background=cfg.background,
            compress_level=cfg.png_compress_level,
            composited=cfg.backend == "gl" and not cfg.transparent,
        )
        for im in images
    ]
    return pngs, fg


def _serve(conn, cfg_json: str) -> None:
    """Worker process main loop (runs in the spawned child)."""
    import os

    # llvmpipe rasterises on its own thread pool (one thread per core) by default; with one worker process per core
    # those threads only fight each other and add a hand-off per draw. Rasterising in the calling thread halves the
    # wall time per view on a loaded 2-core machine. This child's environment only; an explicit setting wins.
    os.environ.setdefault("LP_NUM_THREADS", "0")
    cfg = RenderParams.model_validate_json(cfg_json)
    try:
        renderer = make_renderer(cfg)
    except Exception as e:
        conn.send(("dead", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", ""))
    try:
        while True:
            job = conn.recv()
            if job is None:
                break
            t0 = time.perf_counter()
            try:
                pngs, fg = render_object(renderer, cfg, job)
                conn.send(ObjectResult(job.asset_id, True, pngs, fg, seconds=time.perf_counter() - t0))
            except Exception as e:  # per-object failure: report and keep serving
                conn.send(
                    ObjectResult(
                        job.asset_id,
                        False,
                        error=type(e).__name__,
                        detail=str(e)[:2000],
                        seconds=time.perf_counter() - t0,
                    )
                )
    finally:
        renderer.close()


class RenderWorker:
    """Parent-side handle of one worker process; restarts it after a crash or timeout."""

    def __init__(self, cfg: RenderParams, start_method: str = "spawn"):
        self.cfg = cfg
        self._ctx = mp.get_context(start_method)
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        # typeshed types get_context(str) as BaseContext, which has no Process; the context it returns has one
        proc = self._ctx.Process(  # type: ignore[attr-defined]
            target=_serve, args=(child, self.cfg.model_dump_json()), daemon=True, name="ovt-render-worker"
        )
        proc.start()
        child.close()
        if not parent.poll(_START_TIMEOUT_S):
            proc.kill()
            raise RuntimeError(f"render worker did not start within {_START_TIMEOUT_S:.0f} s")
        try:
            status, detail = parent.recv()
        except EOFError:
            proc.join(5)
            status, detail = "dead", f"process exited with code {proc.exitcode} before it was ready"
        if status != "ready":
            proc.join(5)
            raise RuntimeError(f"render worker failed to start: {detail}")
        self._proc, self._conn = proc, parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def render(self, job: ObjectJob) -> ObjectResult:
        if self._proc is None or not self._proc.is_alive():
            self._kill()
            self._start()
        t0 = time.perf_counter()
        # the blender backend enforces its own timeout on Cycles; give it a margin for import and PNG reading
        timeout = self.cfg.object_timeout_s + (30.0 if self.cfg.backend == "blender" else 0.0)
        conn = self._conn
        if conn is None:  # _start() either connects or raises
            raise RuntimeError("render worker: no connection to the worker process")
        try:
            conn.send(job)
            if conn.poll(timeout):
                return conn.recv()
            self._kill()
            return ObjectResult(
                job.asset_id,
                False,
                error="Timeout",
                detail=f"no result within object_timeout_s={self.cfg.object_timeout_s:g}",
                seconds=time.perf_counter() - t0,
            )
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as e:
            code = self._proc.exitcode if self._proc is not None else None
            self._kill()
            return ObjectResult(
                job.asset_id,
                False,
                error="WorkerCrashed",
                detail=f"worker process died ({type(e).__name__}, exit code {code})",
                seconds=time.perf_counter() - t0,
            )

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.join(10)
            except (BrokenPipeError, OSError):
                pass
        self._kill()

    def __enter__(self) -> RenderWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

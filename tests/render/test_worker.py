"""The worker process boundary: a worker that dies mid-object is reported as a crash and replaced."""

import os
import signal
import threading
import time

from ovt.render.cameras import light_for_object, sample_views
from ovt.render.config import RenderParams, Ring
from ovt.render.worker import ObjectJob, RenderWorker

from .conftest import write_hanging, write_marker_obj

CFG = RenderParams(image_size=32, rings=(Ring(elevation=10, n_azimuth=2),), poles=False, object_timeout_s=60)


def _job(path, aid):
    return ObjectJob(aid, str(path), None, sample_views(CFG, 0), light_for_object(CFG, 0))


def test_crashed_worker_is_reported_and_replaced(tmp_path):
    hang = write_hanging(tmp_path / "h")
    good = write_marker_obj(tmp_path / "g")
    with RenderWorker(CFG) as w:
        first = w.render(_job(good, "g0"))  # starts the worker process
        assert first.ok and len(first.pngs) == 2
        pid = w._proc.pid
        # SIGKILL the worker while it is stuck inside an object: a real crash, long before the 60 s timeout
        threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
        t0 = time.perf_counter()
        res = w.render(_job(hang, "h"))
        assert not res.ok and res.error == "WorkerCrashed" and time.perf_counter() - t0 < 30
        again = w.render(_job(good, "g1"))  # a fresh worker takes over
        assert again.ok and w._proc.pid != pid
        assert again.pngs == first.pngs

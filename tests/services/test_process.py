"""ManagedProcess against small real processes: PID files, readiness, failures, tree stop, stale PIDs.

These exercise the generic machinery quickly; test_stack.py runs the same code against the real SeaweedFS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from ovt.services.process import ManagedProcess, ProcessSpec, ServiceError
from ovt.services.testing import free_ports

pytestmark = pytest.mark.timeout(120)

# A tiny HTTP server that first starts a grandchild (sleep), so that stopping must take a whole tree down.
# Optionally it ignores SIGTERM, to exercise the SIGKILL escalation.
SERVER = textwrap.dedent("""
    import http.server, signal, subprocess, sys
    port, ignore_term = int(sys.argv[1]), sys.argv[2] == "1"
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("child", child.pid, flush=True)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
""")


def make(tmp_path, argv, port, name="svc") -> ManagedProcess:
    spec = ProcessSpec(
        name=name,
        argv=argv,
        env=dict(os.environ),
        health_url=f"http://127.0.0.1:{port}/",
        url=f"http://127.0.0.1:{port}",
        ports=(port,),
        cwd=tmp_path,
    )
    return ManagedProcess(spec, run_dir=tmp_path / "run", log_dir=tmp_path / "logs")


@pytest.fixture
def port():
    return free_ports(1)[0]


def _tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def test_start_is_idempotent_and_stop_takes_the_tree_down(tmp_path, port):
    mp = make(tmp_path, [sys.executable, "-c", SERVER, str(port), "0"], port)
    assert mp.start(timeout=30) is True
    pid = mp.pid()
    assert pid and int(mp.pid_file.read_text()) == pid and mp.healthy()
    assert "start:" in mp.log_file.read_text()
    tree = _tree(pid)
    assert len(tree) == 2, "the server should have started its grandchild"
    assert mp.tree_rss() > 0

    assert mp.start(timeout=30) is False  # second start while healthy: no-op
    assert mp.pid() == pid

    assert mp.stop(timeout=10) is True
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert not mp.pid_file.exists() and mp.pid() is None and not mp.healthy()
    assert mp.stop(timeout=10) is False  # stopping a stopped service is fine


def test_sigterm_ignored_escalates_to_sigkill(tmp_path, port):
    mp = make(tmp_path, [sys.executable, "-c", SERVER, str(port), "1"], port)
    mp.start(timeout=30)
    tree = _tree(mp.pid())
    t0 = time.monotonic()
    assert mp.stop(timeout=1.0)
    assert time.monotonic() - t0 < 8
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)


def test_process_that_exits_during_start_reports_its_log(tmp_path, port):
    mp = make(tmp_path, [sys.executable, "-c", "print('bad flag -xyz'); raise SystemExit(3)"], port)
    with pytest.raises(ServiceError, match=r"(?s)svc exited with code 3 while starting.*bad flag -xyz"):
        mp.start(timeout=30)
    assert not mp.pid_file.exists()


def test_never_healthy_times_out_with_log_tail_and_cleans_up(tmp_path, port):
    argv = [sys.executable, "-c", "print('still warming up', flush=True); import time; time.sleep(600)"]
    mp = make(tmp_path, argv, port)
    with pytest.raises(ServiceError, match=r"(?s)not healthy at http://127.0.0.1:\d+/ after 1 s.*still warming up"):
        mp.start(timeout=1.0)
    assert not mp.pid_file.exists()  # the half-started process was stopped, not left behind


def test_stale_pid_file_of_a_dead_process_is_removed(tmp_path, port):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mp = make(tmp_path, [sys.executable, "-c", SERVER, str(port), "0"], port)
    mp.pid_file.parent.mkdir(parents=True)
    mp.pid_file.write_text(f"{dead.pid}\n")
    assert mp.pid() is None
    assert not mp.pid_file.exists()
    mp.pid_file.write_text("not-a-pid\n")  # garbage is stale too
    assert mp.pid() is None and not mp.pid_file.exists()
    # and a start after that works normally
    assert mp.start(timeout=30) is True
    mp.stop(timeout=10)


def test_pid_reused_by_a_newer_process_is_not_ours(tmp_path, port):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mp = make(tmp_path, [sys.executable, "-c", SERVER, str(port), "0"], port)
        mp.pid_file.parent.mkdir(parents=True)
        mp.pid_file.write_text(f"{other.pid}\n")
        old = time.time() - 3600  # the PID file predates the process: the PID was reused
        os.utime(mp.pid_file, (old, old))
        assert mp.pid() is None and not mp.pid_file.exists()
        assert other.poll() is None, "a foreign process must never be signalled"
    finally:
        other.kill()
        other.wait()


def test_port_taken_by_a_foreign_process_is_a_clear_error(tmp_path, port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        mp = make(tmp_path, [sys.executable, "-c", SERVER, str(port), "0"], port)
        with pytest.raises(ServiceError, match=rf"port\(s\) \[{port}\] on 127.0.0.1 are already in use"):
            mp.start(timeout=10)
        assert not mp.pid_file.exists()

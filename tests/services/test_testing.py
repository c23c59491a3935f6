"""ovt.services.testing: free-port selection and the local_stack context manager used by other suites."""

from __future__ import annotations

import random
import socket

import psutil
import pytest

from ovt.services import s3_client
from ovt.services.config import GRPC_OFFSET, ServiceSettings
from ovt.services.testing import free_port_settings, free_ports, local_stack

pytestmark = pytest.mark.timeout(180)


def test_free_ports_are_distinct_and_leave_room_for_grpc():
    ports = free_ports(7, with_grpc=5, rng=random.Random(0))
    assert len(set(ports)) == 7
    every = ports + [p + GRPC_OFFSET for p in ports[:5]]
    assert len(set(every)) == len(every)
    for p in every:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # raises if taken


def test_free_port_settings_are_valid_and_isolated(tmp_path, monkeypatch):
    # the caller's environment must not leak into test settings: a developer's OVT_*/AWS_* are ignored
    monkeypatch.setenv("OVT_S3_PORT", "8333")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-elses-key")
    s = free_port_settings(tmp_path, extra_buckets=("abc",))
    assert s.state_dir == tmp_path.resolve() and s.buckets == ("dvc", "mlflow", "abc")
    assert s.access_key == "ovt-test" and s.host == "127.0.0.1"
    every = list(s.all_ports().values())  # HTTP and gRPC ports of every service
    defaults = ServiceSettings.model_construct().all_ports().values()  # the defaults, unvalidated: no env read
    assert len(set(every)) == len(every), "two services (or a gRPC port) share a port"
    assert not set(every) & set(defaults), "a test stack on a default port"
    for p in every:  # free right now: a stack started on these settings cannot collide with a running one
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", p))


def test_local_stack_always_tears_down(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with local_stack(tmp_path, names=["s3"]) as mgr:
            (st,) = mgr.status(["s3"])
            assert st.healthy
            assert "abc" not in {b["Name"] for b in s3_client(mgr.settings).list_buckets()["Buckets"]}
            proc = psutil.Process(st.pid)
            raise RuntimeError("boom")
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "run" / "s3.pid").exists()

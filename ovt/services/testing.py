"""Bring the real local stack up on free ports in a throw-away state folder (tests, the end-to-end test, CI).

    from ovt.services.testing import local_stack
    with local_stack(tmp_path, names=("s3", "mlflow")) as mgr:
        env = mgr.client_env()        # point clients (boto3, mlflow, dvc subprocesses) at this stack
        ...

Free ports are chosen so that several test sessions (or a developer's stack on the default ports) can run side by
side on one machine. SeaweedFS also binds each HTTP port + 10000 (gRPC), so both must be free.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ovt.services.config import GRPC_OFFSET, ServiceSettings
from ovt.services.manager import ServiceManager

# Below the Linux ephemeral range (32768+), so an outgoing connection cannot grab a port between our check and the
# service's bind; +10000 stays below it too.
_PORT_RANGE = (20_000, 22_700)


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_ports(n: int, with_grpc: int = 0, host: str = "127.0.0.1", rng: random.Random | None = None) -> list[int]:
    """`n` distinct free ports; the first `with_grpc` of them also have port+10000 free."""
    rng = rng or random.Random()
    chosen: list[int] = []
    for _ in range(10_000):
        p = rng.randrange(*_PORT_RANGE)
        need = [p, p + GRPC_OFFSET] if len(chosen) < with_grpc else [p]
        if any(q in chosen or q - GRPC_OFFSET in chosen or q + GRPC_OFFSET in chosen for q in need):
            continue
        if all(_bindable(q, host) for q in need):
            chosen.append(p)
            if len(chosen) == n:
                return chosen
    raise RuntimeError(f"could not find {n} free ports in {_PORT_RANGE}")


def free_port_settings(state_dir: str | Path, **overrides) -> ServiceSettings:
    """Settings on free ports with fixed test credentials, independent of the caller's OVT_*/AWS_* env."""
    s3, master, volume, filer, admin, mlflow, prefect = free_ports(7, with_grpc=5)
    values: dict[str, Any] = dict(  # Any: ServiceSettings validates each value
        state_dir=Path(state_dir),
        s3_port=s3,
        s3_master_port=master,
        s3_volume_port=volume,
        s3_filer_port=filer,
        s3_admin_port=admin,
        mlflow_port=mlflow,
        prefect_port=prefect,
        access_key="ovt-test",
        secret_key="ovt-test-secret",
        start_timeout_s=180.0,
    )
    values.update(overrides)
    return ServiceSettings(**values)


@contextlib.contextmanager
def local_stack(
    state_dir: str | Path, names: Iterable[str] | None = None, settings: ServiceSettings | None = None
) -> Iterator[ServiceManager]:
    """Start `names` (default all three) on free ports under `state_dir`; always stop them on exit."""
    mgr = ServiceManager(settings or free_port_settings(state_dir))
    try:
        mgr.up(names)
        yield mgr
    finally:
        mgr.down()

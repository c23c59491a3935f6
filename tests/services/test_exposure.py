"""Unauthenticated write and delete attempts on every port the running SeaweedFS opens: all must be refused.

Run with `-s` to see each refusal (port, attempt, what the client got back).
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ovt.services import s3_client
from ovt.services.exposure import (
    listening_ports,
    probe_storage,
    probe_unauthenticated_servers,
)

pytestmark = pytest.mark.timeout(300)

KEY = "exposure/keep-me.txt"


def test_storage_ports_refuse_unauthenticated_writes_and_deletes(stack):
    s = stack.settings
    c = s3_client(s)
    c.put_object(Bucket=s.dvc_bucket, Key=KEY, Body=b"must survive")
    (st,) = stack.status(["s3"])

    attempts = probe_storage(s, existing_key=KEY)
    for a in attempts:
        print(f"{'refused' if a.refused else 'ACCEPTED':8} {a.port_name:12} {a.port:5}  {a.action}: {a.detail}")
    print(
        f"{sum(a.refused for a in attempts)} of {len(attempts)} attempts refused on "
        f"{len({a.port for a in attempts})} ports"
    )

    assert [a for a in attempts if not a.refused] == []
    # every port weed listens on was tried (a new listener in a new weed version would show up here)
    opened = listening_ports(st.pid)
    assert set(opened) <= {a.port for a in attempts}, f"untested ports: {set(opened) - {a.port for a in attempts}}"
    assert set(opened.values()) == {"127.0.0.1"}
    # nothing was written or deleted after all: the authenticated S3 view is unchanged
    assert c.get_object(Bucket=s.dvc_bucket, Key=KEY)["Body"].read() == b"must survive"
    with pytest.raises(ClientError):
        c.head_object(Bucket=s.dvc_bucket, Key="ovt-exposure-probe.txt")
    assert {b["Name"] for b in c.list_buckets()["Buckets"]} >= {s.dvc_bucket, s.mlflow_bucket}


def test_credentials_are_private_to_the_state_folder(stack):
    s = stack.settings
    toml = s.state_dir / "s3" / "security.toml"
    tls = s.state_dir / "s3-tls"
    assert toml.stat().st_mode & 0o777 == 0o600 and (tls / "node.key").stat().st_mode & 0o777 == 0o600
    assert tls.stat().st_mode & 0o777 == 0o700
    text = toml.read_text()
    assert "[jwt.signing]" in text and "[jwt.filer_signing]" in text and "[grpc.client]" in text
    assert 'key = ""' not in text  # every JWT key is set
    assert not (tls / "ca.key").exists()  # the CA key is gone: no further certificate can be signed


def test_the_probe_sees_an_open_filer(tmp_path):
    """Control: the same probe against weed *without* the hardening finds the filer and master open, so the
    test above would fail on an exposed stack."""
    import dataclasses

    from ovt.services.definitions import s3_spec
    from ovt.services.process import ManagedProcess
    from ovt.services.testing import free_port_settings

    s = free_port_settings(tmp_path / "state")
    spec = s3_spec(s)
    spec = dataclasses.replace(spec, argv=[a for a in spec.argv if a != "-disableHttp"], before_start=None)
    proc = ManagedProcess(spec, run_dir=s.run_dir, log_dir=s.log_dir, host=s.host)
    proc.start(timeout=s.start_timeout_s)
    try:
        spec.after_start()
        s3_client(s).put_object(Bucket=s.dvc_bucket, Key=KEY, Body=b"x")
        accepted = {(a.port_name, a.action.split(" (")[0]) for a in probe_storage(s, existing_key=KEY) if not a.refused}
    finally:
        proc.stop(timeout=s.stop_timeout_s)
    assert ("filer", f"PUT /buckets/{s.dvc_bucket}/ovt-exposure-probe.txt") in accepted
    assert ("master", "POST /dir/assign") in accepted
    assert any(name.endswith(".grpc") for name, _ in accepted)


@pytest.mark.slow
def test_mlflow_and_prefect_are_open_but_local_only(stack):
    """They have no authentication of their own (documented): a local write succeeds; nothing else can reach them,
    because every port they listen on is bound to 127.0.0.1."""
    try:
        stack.up(["mlflow", "prefect"])
        attempts = probe_unauthenticated_servers(stack.settings)
        for a in attempts:
            print(f"{'refused' if a.refused else 'open':8} {a.port_name:12} {a.port:5}  {a.action}: {a.detail}")
        assert {a.port_name for a in attempts if not a.refused} == {"mlflow", "prefect"}  # the probe reaches them
        for name in ("mlflow", "prefect"):
            (st,) = stack.status([name])
            opened = listening_ports(st.pid)
            print(f"{name}: listening on {sorted(opened.items())}")
            assert opened and set(opened.values()) == {"127.0.0.1"}, opened
    finally:
        stack.down(["prefect", "mlflow"])

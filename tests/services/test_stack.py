"""The real local stack: SeaweedFS `weed mini` (and, marked slow, MLflow + Prefect) on free ports.

One SeaweedFS is started per session (conftest.py `stack`); tests that stop it start it again before they end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request

import boto3
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ovt.services import ServiceManager, s3_client
from ovt.services.process import ServiceError

pytestmark = pytest.mark.timeout(300)


def _status(mgr: ServiceManager, name: str):
    (st,) = mgr.status([name])
    return st


def test_s3_is_healthy_and_buckets_exist(stack):
    st = _status(stack, "s3")
    assert st.healthy and st.pid and st.url == stack.settings.s3_url
    assert psutil.Process(st.pid).name() == "weed"
    names = {b["Name"] for b in s3_client(stack.settings).list_buckets()["Buckets"]}
    assert {"dvc", "mlflow"} <= names
    # bound to loopback only
    conns = psutil.Process(st.pid).net_connections(kind="tcp")
    listening = {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}


def test_put_get_and_auth_enforced(stack):
    s = stack.settings
    c = s3_client(s)
    c.put_object(Bucket="dvc", Key="t/hello.txt", Body=b"hello ovt")
    assert c.get_object(Bucket="dvc", Key="t/hello.txt")["Body"].read() == b"hello ovt"
    listed = c.list_objects_v2(Bucket="dvc", Prefix="t/")["Contents"]
    assert [o["Key"] for o in listed] == ["t/hello.txt"]

    intruder = boto3.client(
        "s3",
        endpoint_url=s.s3_url,
        aws_access_key_id=s.access_key,
        aws_secret_access_key="wrong-secret",
        region_name=s.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as e:
        intruder.get_object(Bucket="dvc", Key="t/hello.txt")
    assert e.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")


def test_second_up_is_a_noop(stack):
    pid = _status(stack, "s3").pid
    (res,) = stack.up(["s3"])
    assert res.started is False and res.pid == pid and res.seconds == 0.0
    assert _status(stack, "s3").pid == pid


def test_extra_bucket_created_on_up_when_already_running(stack):
    mgr = ServiceManager(stack.settings.model_copy(update={"extra_buckets": ("renders",)}))
    mgr.up(["s3"])
    names = {b["Name"] for b in s3_client(stack.settings).list_buckets()["Buckets"]}
    assert "renders" in names


def test_stop_then_data_persists_across_restart(stack):
    c = s3_client(stack.settings)
    c.put_object(Bucket="dvc", Key="persist/blob.bin", Body=os.urandom(1 << 16))
    before = c.head_object(Bucket="dvc", Key="persist/blob.bin")["ETag"]
    st = _status(stack, "s3")
    proc = psutil.Process(st.pid)

    assert stack.down(["s3"]) == ["s3"]
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert not (stack.settings.run_dir / "s3.pid").exists()
    after_down = _status(stack, "s3")
    assert after_down.pid is None and not after_down.healthy

    (res,) = stack.up(["s3"])
    assert res.started and res.pid != st.pid
    assert s3_client(stack.settings).head_object(Bucket="dvc", Key="persist/blob.bin")["ETag"] == before


def test_stale_pid_file_is_cleaned_up_and_up_recovers(stack):
    stack.down(["s3"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = stack.settings.run_dir / "s3.pid"
    pid_file.write_text(f"{dead.pid}\n")
    st = _status(stack, "s3")
    assert st.pid is None and not st.healthy and not pid_file.exists()
    (res,) = stack.up(["s3"])
    assert res.started and _status(stack, "s3").healthy


def test_start_failure_shows_the_log_tail(stack, tmp_path):
    # A second SeaweedFS on the same ports in another state folder: the port check refuses it up front.
    other = ServiceManager(stack.settings.model_copy(update={"state_dir": tmp_path}))
    with pytest.raises(ServiceError, match="already in use by a process this project did not start"):
        other.up(["s3"])


def test_unknown_service_name(stack):
    with pytest.raises(ServiceError, match=r"unknown service\(s\) \['minio'\]; known: s3, mlflow, prefect"):
        stack.up(["minio"])


FLOW = textwrap.dedent("""
    from prefect import flow, task

    @task
    def add(a, b):
        return a + b

    @flow(name="ovt-services-smoke")
    def smoke():
        return add(1, 2)

    assert smoke() == 3
""")


@pytest.mark.slow
def test_mlflow_and_prefect_against_local_s3(stack, tmp_path):
    """MLflow proxies artifact uploads into the local S3; Prefect runs a flow against its server."""
    try:
        results = stack.up(["mlflow", "prefect"])
        assert [r.name for r in results] == ["s3", "mlflow", "prefect"]  # dependency first, canonical order
        assert all(st.healthy for st in stack.status())

        env = {**os.environ, **stack.client_env()}
        # The client gets no S3 credentials: with --artifacts-destination the server proxies the upload.
        client_env = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        script = textwrap.dedent("""
            import json, mlflow
            mlflow.set_experiment("services-test")
            with mlflow.start_run() as run:
                mlflow.log_param("p", 1)
                mlflow.log_text("artifact body", "notes/hello.txt")
            print(json.dumps({"run_id": run.info.run_id, "exp": run.info.experiment_id,
                              "uri": run.info.artifact_uri}))
        """)
        out = subprocess.run(
            [sys.executable, "-c", script], env=client_env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-3000:]
        info = json.loads(out.stdout.strip().splitlines()[-1])
        assert info["uri"].startswith("mlflow-artifacts:/")
        key = f"{stack.settings.mlflow_artifacts_prefix}/{info['exp']}/{info['run_id']}/artifacts/notes/hello.txt"
        body = s3_client(stack.settings).get_object(Bucket="mlflow", Key=key)["Body"].read()
        assert body == b"artifact body"

        with urllib.request.urlopen(f"{stack.settings.prefect_api_url}/health", timeout=5) as r:
            assert json.load(r) is True
        out = subprocess.run([sys.executable, "-c", FLOW], env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        req = urllib.request.Request(
            f"{stack.settings.prefect_api_url}/flow_runs/filter",
            method="POST",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)
        assert any(run["state_type"] == "COMPLETED" for run in runs)
        assert (stack.settings.prefect_home / "prefect.db").exists()  # its DB is in the state folder

        # the second up of the whole stack is a no-op
        assert not any(r.started for r in stack.up())
    finally:
        stopped = stack.down(["prefect", "mlflow"])
    assert stopped == ["prefect", "mlflow"]
    assert [st.name for st in stack.status() if st.pid] == ["s3"]


CLIENT = textwrap.dedent("""
    import boto3, s3fs
    # Configured by the environment alone (client_env), as DVC subprocesses and flows will be.
    boto3.client("s3").put_object(Bucket="dvc", Key="env/probe.txt", Body=b"via env")
    fs = s3fs.S3FileSystem()  # DVC's S3 remote goes through s3fs/aiobotocore
    print(fs.cat("dvc/env/probe.txt").decode())
""")


def test_client_env_alone_configures_boto3_and_s3fs(stack):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OVT_"))}
    env.update(stack.client_env())
    out = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "via env"

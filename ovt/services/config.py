"""Settings for the local service stack (S3, MLflow, Prefect), with environment overrides.

Every field can be overridden by an environment variable `OVT_<FIELD>` (e.g. `OVT_S3_PORT=9000`,
`OVT_STATE_DIR=/tmp/ovt-state`); the S3 credentials come from the standard `AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY` so that boto3, DVC and MLflow pick up the same pair without extra wiring.
Explicit constructor arguments win over the environment (that is how tests pin free ports).

The defaults are the documented local defaults; the credentials are throw-away local values, not secrets, and a
real deployment sets its own through the environment.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ovt.params_base import format_validation_error

#: The repository root (ovt/services/config.py -> ovt/services -> ovt -> root) of the editable install; the default
#: state folder lives here. A non-editable install has no repo around it: fall back to the working directory.
_PKG_PARENT = Path(__file__).resolve().parents[2]
REPO_ROOT = _PKG_PARENT if (_PKG_PARENT / "pyproject.toml").is_file() else Path.cwd()

DEFAULT_ACCESS_KEY = "ovt-local"
DEFAULT_SECRET_KEY = "ovt-local-secret"

#: SeaweedFS derives each gRPC port as HTTP port + 10000; ports above this would overflow 65535.
GRPC_OFFSET = 10_000
_MAX_HTTP_PORT_WITH_GRPC = 65_535 - GRPC_OFFSET

# S3 bucket naming rules (AWS): 3-63 chars, lowercase letters, digits, dots and hyphens, start/end alphanumeric.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

Port = int


class ServiceSettings(BaseSettings):
    """Where and how the local services run. Frozen; unknown constructor keys are errors."""

    model_config = SettingsConfigDict(
        env_prefix="OVT_", extra="forbid", frozen=True, populate_by_name=True, validate_default=True
    )

    host: str = Field("127.0.0.1", description="Address every service binds to; must be a loopback address.")
    state_dir: Path = Field(
        REPO_ROOT / ".state", description="One folder for PID files, logs, databases and S3 data (git-ignored)."
    )

    # SeaweedFS `weed mini`: the S3 gateway plus the master/volume/filer/admin servers it runs in one process.
    # Their gRPC ports are the HTTP port + 10000, so each of these also reserves port+10000.
    s3_port: Port = 8333
    s3_master_port: Port = 9333
    s3_volume_port: Port = 9340
    s3_filer_port: Port = 8888
    s3_admin_port: Port = 23646

    mlflow_port: Port = 5000
    prefect_port: Port = 4200

    access_key: str = Field(
        DEFAULT_ACCESS_KEY, min_length=3, validation_alias=AliasChoices("access_key", "AWS_ACCESS_KEY_ID")
    )
    secret_key: SecretStr = Field(
        SecretStr(DEFAULT_SECRET_KEY), validation_alias=AliasChoices("secret_key", "AWS_SECRET_ACCESS_KEY")
    )
    region: str = "us-east-1"

    dvc_bucket: str = "dvc"
    mlflow_bucket: str = "mlflow"
    extra_buckets: tuple[str, ...] = ()
    mlflow_artifacts_prefix: str = "artifacts"

    start_timeout_s: float = Field(120.0, gt=0, description="Per-service wait for the health check to pass.")
    stop_timeout_s: float = Field(20.0, gt=0, description="Wait after SIGTERM before SIGKILL of the process tree.")

    # ------------------------------------------------------------------ validation
    @field_validator("host")
    @classmethod
    def _loopback_only(cls, v: str) -> str:
        # The stack has default credentials and no TLS: it must never listen beyond this machine.
        try:
            ok = ipaddress.ip_address(v).is_loopback
        except ValueError:
            ok = v == "localhost"
        if not ok:
            raise ValueError(f"host must be a loopback address such as 127.0.0.1 (got {v!r})")
        return v

    @field_validator("s3_port", "s3_master_port", "s3_volume_port", "s3_filer_port", "s3_admin_port")
    @classmethod
    def _weed_port(cls, v: int) -> int:
        if not 1024 <= v <= _MAX_HTTP_PORT_WITH_GRPC:
            raise ValueError(
                f"SeaweedFS ports must be in 1024..{_MAX_HTTP_PORT_WITH_GRPC} "
                f"(its gRPC port is port+{GRPC_OFFSET}); got {v}"
            )
        return v

    @field_validator("mlflow_port", "prefect_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1024 <= v <= 65_535:
            raise ValueError(f"ports must be in 1024..65535; got {v}")
        return v

    @field_validator("dvc_bucket", "mlflow_bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not _BUCKET_RE.match(v):
            raise ValueError(f"invalid S3 bucket name {v!r}: 3-63 characters of a-z, 0-9, '.', '-'")
        return v

    @field_validator("extra_buckets")
    @classmethod
    def _buckets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for b in v:
            cls._bucket(b)
        return v

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        # Services run with their own cwd; a relative state folder would split the state between two places.
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServiceSettings:
        taken: dict[int, str] = {}
        for name, port in self.all_ports().items():
            if port in taken:
                raise ValueError(f"port {port} is used twice: {taken[port]} and {name}")
            taken[port] = name
        return self

    # ------------------------------------------------------------------ derived values
    def all_ports(self) -> dict[str, int]:
        """Every TCP port the stack listens on, by a descriptive name."""
        ports: dict[str, int] = {}
        for field in ("s3_port", "s3_master_port", "s3_volume_port", "s3_filer_port", "s3_admin_port"):
            ports[field] = getattr(self, field)
            ports[f"{field}.grpc"] = getattr(self, field) + GRPC_OFFSET
        ports["mlflow_port"] = self.mlflow_port
        ports["prefect_port"] = self.prefect_port
        return ports

    @property
    def buckets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.dvc_bucket, self.mlflow_bucket, *self.extra_buckets)))

    @property
    def s3_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_artifacts_destination(self) -> str:
        return f"s3://{self.mlflow_bucket}/{self.mlflow_artifacts_prefix.strip('/')}"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    def env_overrides(self) -> dict[str, str]:
        """These settings as `OVT_*` variables, so a child process rebuilds exactly the same settings."""
        env = {"OVT_HOST": self.host, "OVT_STATE_DIR": str(self.state_dir)}
        for field in (
            "s3_port",
            "s3_master_port",
            "s3_volume_port",
            "s3_filer_port",
            "s3_admin_port",
            "mlflow_port",
            "prefect_port",
            "dvc_bucket",
            "mlflow_bucket",
            "region",
            "mlflow_artifacts_prefix",
        ):
            env[f"OVT_{field.upper()}"] = str(getattr(self, field))
        if self.extra_buckets:
            env["OVT_EXTRA_BUCKETS"] = json.dumps(list(self.extra_buckets))  # complex fields are JSON in env
        return env


class ServiceConfigError(ValueError):
    """The service settings (constructor arguments or OVT_* / AWS_* environment) are invalid."""


def load_settings(**overrides: Any) -> ServiceSettings:  # Any: pydantic validates each value
    """Build settings from the environment plus `overrides`; a bad value raises one error naming the key."""
    try:
        return ServiceSettings(**overrides)
    except ValidationError as err:
        msg = format_validation_error(err, ServiceSettings, source="service settings (arguments / OVT_* env)")
        msg += (
            "\n  (each key <k> is read from the environment as OVT_<K>; the S3 credentials from "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        )
        raise ServiceConfigError(msg) from None

"""ServiceSettings: defaults, environment overrides, validation errors, client environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovt.services import ServiceConfigError, ServiceSettings, client_env, load_settings
from ovt.services.config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, REPO_ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    # The developer's shell may export OVT_* or AWS_* values; these tests are about the defaults and overrides.
    import os

    for k in list(os.environ):
        if k.startswith("OVT_") or k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(k)


def test_documented_defaults():
    s = ServiceSettings()
    assert s.host == "127.0.0.1"
    assert s.state_dir == (REPO_ROOT / ".state").resolve()
    assert (s.s3_port, s.mlflow_port, s.prefect_port) == (8333, 5000, 4200)
    assert (s.access_key, s.secret_key.get_secret_value()) == (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)
    assert s.buckets == ("dvc", "mlflow")
    assert s.mlflow_artifacts_destination == "s3://mlflow/artifacts"
    assert s.prefect_api_url == "http://127.0.0.1:4200/api"
    assert DEFAULT_SECRET_KEY not in repr(s)  # the secret never lands in logs via repr


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("OVT_S3_PORT", "9000")
    monkeypatch.setenv("OVT_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.setenv("OVT_EXTRA_BUCKETS", '["renders"]')
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("OVT_SOMETHING_ELSE", "x")  # other components' OVT_* variables are not our business
    s = load_settings()
    assert s.s3_port == 9000 and s.s3_url == "http://127.0.0.1:9000"
    assert s.state_dir == (tmp_path / "st").resolve()
    assert s.buckets == ("dvc", "mlflow", "renders")
    assert s.access_key == "someone" and s.secret_key.get_secret_value() == "s3cr3t-value"
    # explicit arguments beat the environment
    assert load_settings(s3_port=9100).s3_port == 9100


def test_env_overrides_round_trip(monkeypatch, tmp_path):
    s = ServiceSettings(
        state_dir=tmp_path, s3_port=21000, mlflow_port=21001, prefect_port=21002, extra_buckets=("abc", "d-e.f")
    )
    for k, v in s.env_overrides().items():
        monkeypatch.setenv(k, v)
    assert ServiceSettings() == s.model_copy(
        update={"access_key": DEFAULT_ACCESS_KEY, "secret_key": ServiceSettings().secret_key}
    )


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"host": "0.0.0.0"}, "host: Value error, host must be a loopback address"),
        ({"s3_port": 60000}, "s3_port: Value error, SeaweedFS ports must be in 1024..55535"),
        ({"mlflow_port": 80}, "mlflow_port: Value error, ports must be in 1024..65535"),
        ({"dvc_bucket": "x"}, "dvc_bucket: Value error, invalid S3 bucket name 'x'"),
        ({"extra_buckets": ("Upper",)}, "invalid S3 bucket name 'Upper'"),
        ({"mlflow_port": 4200}, "port 4200 is used twice: mlflow_port and prefect_port"),
        ({"s3_master_port": 18333}, "port 18333 is used twice: s3_port.grpc and s3_master_port"),
        ({"s3_prot": 1}, "s3_prot: unknown key (allowed keys: access_key"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, needle):
    with pytest.raises(ServiceConfigError) as e:
        load_settings(**kwargs)
    assert needle in str(e.value)


def test_bad_environment_value_names_key(monkeypatch):
    monkeypatch.setenv("OVT_PREFECT_PORT", "abc")
    with pytest.raises(ServiceConfigError, match=r"(?s)prefect_port: .*valid integer.*'abc'.*OVT_<K>"):
        load_settings()


def test_client_env_points_everything_at_the_stack(tmp_path):
    s = ServiceSettings(
        state_dir=tmp_path, s3_port=21010, mlflow_port=21011, prefect_port=21012, access_key="k3y", secret_key="s3cr3t"
    )
    env = client_env(s)
    assert env["AWS_ACCESS_KEY_ID"] == "k3y" and env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:21010"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:21011"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:21012/api"
    assert Path(env["PREFECT_HOME"]) == tmp_path / "prefect"
    assert env["OVT_STATE_DIR"] == str(tmp_path)
    assert env["HF_HUB_OFFLINE"] == "1" and env["DVC_NO_ANALYTICS"] == "1"
    assert env["DO_NOT_TRACK"] == "true" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert all(isinstance(v, str) for v in env.values())

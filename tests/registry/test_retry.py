import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from ovt.registry.config import RetryParams
from ovt.registry.retry import is_transient, single_layer_http_retries, with_retries


def test_transient_errors_are_retried_with_exponential_backoff():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("refused")
        return "ok"

    cfg = RetryParams(attempts=5, initial_delay_s=1.0, backoff=2.0, max_delay_s=3.0)
    assert with_retries(flaky, cfg, "flaky", sleep=sleeps.append) == "ok"
    assert sleeps == [1.0, 2.0, 3.0]  # capped at max_delay_s


def test_gives_up_after_attempts_and_reraises():
    sleeps = []
    with pytest.raises(ConnectionError):
        with_retries(lambda: (_ for _ in ()).throw(ConnectionError("down")), RetryParams(attempts=3), "x",
                     sleep=sleeps.append)
    assert len(sleeps) == 2


def test_permanent_mlflow_errors_are_not_retried():
    calls = []

    def bad():
        calls.append(1)
        raise MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(MlflowException):
        with_retries(bad, RetryParams(attempts=5), "bad", sleep=lambda s: None)
    assert len(calls) == 1
    assert is_transient(MlflowException("500", error_code="INTERNAL_ERROR"))
    assert not is_transient(ValueError("bug"))


def test_mlflow_http_retries_switched_off_only_inside_and_only_when_unset(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    import os

    with single_layer_http_retries(RetryParams(request_timeout_s=30)):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the user's value wins
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ

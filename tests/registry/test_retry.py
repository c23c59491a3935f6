import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from ovt.registry.config import RetryParams
from ovt.registry.retry import is_transient, mlflow_http_env, with_retries


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
        with_retries(
            lambda: (_ for _ in ()).throw(ConnectionError("down")), RetryParams(attempts=3), "x", sleep=sleeps.append
        )
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


def test_mlflow_http_env_is_computed_not_applied(monkeypatch):
    import os

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    before = dict(os.environ)
    env = mlflow_http_env(RetryParams(request_timeout_s=30))
    assert env == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # the user's timeout wins: not in the result
    assert dict(os.environ) == before
    assert mlflow_http_env(RetryParams(request_timeout_s=30), environ={}) == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }


def test_no_production_module_of_the_registry_writes_os_environ():
    import ast
    from pathlib import Path

    import ovt.registry

    offenders = []
    for path in Path(ovt.registry.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                obj = node.func.value
                if node.func.attr in (
                    "update",
                    "pop",
                    "setdefault",
                    "clear",
                    "__setitem__",
                    "putenv",
                    "unsetenv",
                ) and ast.unparse(obj) in ("os.environ", "environ", "os"):
                    target = ast.unparse(node)
            elif isinstance(node, (ast.Assign, ast.Delete)):
                for t in getattr(node, "targets", []):
                    if isinstance(t, ast.Subscript) and ast.unparse(t.value) in ("os.environ", "environ"):
                        target = ast.unparse(t)
            if target:
                offenders.append(f"{path.name}:{node.lineno}: {target}")
    assert offenders == []

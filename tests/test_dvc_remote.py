"""One S3 endpoint: DVC's remote follows the services' settings (OVT_S3_PORT, AWS_* keys) through `ovt remote`,
in a real DVC repository whose committed .dvc/config still names the default port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.imports import ROOT

pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    # Nothing AWS_* or OVT_* from the caller: the repo's DVC config alone must decide where a push goes.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OVT_"))}
    env.update(extra)
    return env


def _repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # endpoint 127.0.0.1:8333, as committed
    (repo / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    (repo / "data.txt").write_text("moved port\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data.txt"], cwd=repo, check=True, env=_clean_env())
    return repo


def _ovt_remote(repo, settings) -> None:
    env = _clean_env(
        **settings.env_overrides(),
        AWS_ACCESS_KEY_ID=settings.access_key,
        AWS_SECRET_ACCESS_KEY=settings.secret_key.get_secret_value(),
    )
    out = subprocess.run(
        [sys.executable, "-m", "cli.app", "remote", "--repo", str(repo)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert settings.secret_key.get_secret_value() not in out.stdout  # the secret is not echoed


def _push(repo) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", "push"], cwd=repo, env=_clean_env(), capture_output=True, text=True, timeout=300
    )


def test_push_goes_to_the_moved_port(tmp_path):
    from ovt.services import s3_client
    from ovt.services.testing import local_stack

    repo = _repo(tmp_path)
    with local_stack(tmp_path / "state", names=("s3",)) as mgr:
        s = mgr.settings
        assert s.s3_port != 8333
        _ovt_remote(repo, s)
        shown = subprocess.run(
            [sys.executable, "-m", "dvc", "config", "remote.local.endpointurl"],
            cwd=repo,
            env=_clean_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert shown == f"http://127.0.0.1:{s.s3_port}"
        res = _push(repo)
        assert res.returncode == 0, res.stdout + res.stderr
        keys = [o["Key"] for o in s3_client(s).list_objects_v2(Bucket=s.dvc_bucket).get("Contents", [])]
        assert any(k.startswith("store/") for k in keys), keys
    assert (
        "config.local"
        not in subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    )


def test_push_fails_clearly_when_nothing_listens_on_the_port(tmp_path):
    from ovt.services.testing import free_port_settings

    repo = _repo(tmp_path)
    s = free_port_settings(tmp_path / "state")  # free ports: no server was started there
    _ovt_remote(repo, s)
    res = _push(repo)
    assert res.returncode != 0
    assert str(s.s3_port) in res.stdout + res.stderr, res.stdout + res.stderr

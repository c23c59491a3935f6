"""The stage entry (`ovt.entry.stage_main`) configures its own process: the library never does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.imports import ROOT

CODE = (
    "import os; from ovt.entry import stage_main; "
    "stage_main(lambda p: print('HF_HUB_OFFLINE=' + os.environ.get('HF_HUB_OFFLINE', '<unset>')))"
)


@pytest.mark.parametrize(("given", "seen"), [(None, "1"), ("0", "0")])
def test_stage_process_is_offline_unless_its_caller_chose(given, seen):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    if given is not None:
        env["HF_HUB_OFFLINE"] = given
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"HF_HUB_OFFLINE={seen}"

"""Two-process torchrun (gloo, CPU): every rank ends with identical adapter weights and mined sets; the stage entry
re-launches itself under $OVT_TORCHRUN."""

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.train.fixtures import TORCHRUN, run_torchrun, stage_layout, tiny_model_cfg, tiny_train_cfg, torchrun_env


@pytest.mark.slow
def test_two_rank_torchrun_identical_adapters(tree, tmp_path):
    run_torchrun("tests.train.ddp_worker", *tree, tmp_path)
    a, b = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert a.keys() == b.keys() and len(a) > 3
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with safe_open(tmp_path / "rank0.safetensors", "pt") as f:
        # 40 train views / (4 per batch × 2 ranks) = 5 steps per epoch, 2 epochs: the ranks split the data
        assert f.metadata()["steps"] == "10"
    assert int(a["_hard"].sum()) == 5 * 2  # sharded mining gathered all 5 objects' hard views on both ranks


@pytest.mark.slow
def test_stage_entry_relaunches_itself_under_ovt_torchrun(tree, tmp_path):
    """`python -m stages.train` with OVT_TORCHRUN set runs as two ranks that split the data: 40 train views /
    (4 per batch × 2 ranks) = 5 steps in one epoch (one process would take 10)."""
    import json

    cfg = tiny_train_cfg(epochs=1, variants=["contrastive"], data={"mvcap_batch": 4, "twod_batch": 2})
    params = {
        "base": {"seed": 3},
        "model": tiny_model_cfg().model_dump(mode="json"),
        "train": cfg.model_dump(mode="json"),
    }
    stage_layout(tmp_path, tree, params)
    env = torchrun_env(OVT_TORCHRUN=f"{TORCHRUN} --standalone --nproc_per_node=2")
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "models" / "train_metrics" / "metrics.json").read_text())
    assert metrics["contrastive"]["steps"] == 5
    assert json.loads((tmp_path / "models" / "contrastive" / "train.json").read_text())["seed"] == 3

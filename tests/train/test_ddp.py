"""Two-process torchrun (gloo, CPU): every rank ends with identical adapter weights and mined sets; the stage entry
re-launches itself under $OVT_TORCHRUN."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.train.fixtures import stage_layout, tiny_model_cfg, tiny_train_cfg

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_rank_torchrun_identical_adapters(tree, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "tests.train.ddp_worker",
            str(tree[0]),
            str(tree[1]),
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
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
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "OVT_TORCHRUN": f"{torchrun} --standalone --nproc_per_node=2",
    }
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "models" / "train_metrics" / "metrics.json").read_text())
    assert metrics["contrastive"]["steps"] == 5
    assert json.loads((tmp_path / "models" / "contrastive" / "train.json").read_text())["seed"] == 3

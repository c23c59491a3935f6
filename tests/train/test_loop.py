"""The training loop on the tiny-test model: determinism, λ, resume after a kill, checkpoint atomicity."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ovt.train import checkpoint as ckpt
from ovt.train.config import TrainParams
from ovt.train.data import build_table
from ovt.train.distributed import DistContext
from ovt.train.loop import Trainer
from ovt.train.stage import run
from tests.train.fixtures import build_tiny, tiny_model_cfg, tiny_train_cfg, train_paths

REPO = Path(__file__).resolve().parents[2]


def _fit(tree, tmp, cfg: TrainParams, variant="ovt", seed=3, resume=False):
    torch.manual_seed(seed)
    model = build_tiny(tiny_model_cfg())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    tr = Trainer(
        model, build_table(cfg.data, *tree), cfg, variant=variant, seed=seed, work_dir=tmp, ctx=DistContext(), key="k"
    )
    stats = tr.fit(resume=resume)
    after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return stats, before, after, tr


def test_ovt_trains_every_adapted_tensor_and_mines(tree, tmp_path):
    stats, before, after, tr = _fit(tree, tmp_path, tiny_train_cfg())
    assert stats["steps"] == 10 and stats["final_loss_vc"] > 0.3 - 1e-6  # positive-only form: d + m ≥ m
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert set(changed) == set(before), f"never updated: {set(before) - set(changed)}"
    ev = tr.tracker.events
    assert len(ev) == 2 and ev[0]["mined/hard_views"] == 5 * 2  # 5 train objects × hard_k
    assert any(r["hard_in_batch"] > 0 for r in tr.tracker.rows)


def test_same_seed_same_weights_and_lambda_matters(tree, tmp_path):
    cfg = tiny_train_cfg(epochs=1)
    _, _, a, _ = _fit(tree, tmp_path / "a", cfg)
    _, _, b, _ = _fit(tree, tmp_path / "b", cfg)
    assert all(torch.equal(a[n], b[n]) for n in a)
    _, _, c, _ = _fit(tree, tmp_path / "c", tiny_train_cfg(epochs=1, loss={"lam": 5.0}))
    assert any(not torch.equal(a[n], c[n]) for n in a)
    # λ = 0 is exactly the contrastive variant
    _, _, d, _ = _fit(tree, tmp_path / "d", tiny_train_cfg(epochs=1, loss={"lam": 0.0}))
    _, _, e, _ = _fit(tree, tmp_path / "e", cfg, variant="contrastive")
    assert all(torch.equal(d[n], e[n]) for n in d)


def test_switches_run(tree, tmp_path):
    cfg = tiny_train_cfg(
        epochs=2,
        max_steps=7,
        model_mode="train",
        mining={"mode": "reuse", "weight": "inv_dist", "renormalise_centre": True},
        loss={"triplet_negative": True, "multi_positive": True},
        data={"object_aware_sampler": True, "views_per_object": 4},
        optim={"wd_on_all": True, "logit_scale_max": 2.0},
    )
    stats, _, after, tr = _fit(tree, tmp_path, cfg)
    assert stats["steps"] == 7
    assert tr.tracker.events[1]["mode"] == "reuse" and tr.tracker.events[0]["mode"] == "full_pass"
    assert float(after["logit_scale"]) <= 2.0


def test_augment_path_without_cache(tree, tmp_path):
    cfg = tiny_train_cfg(epochs=1, max_steps=2, data={"cache_prefix": False, "augment": True})
    stats, before, after, _ = _fit(tree, tmp_path, cfg)
    assert stats["steps"] == 2 and any(not torch.equal(before[n], after[n]) for n in before)


def test_batch_too_large_is_named(tree, tmp_path):
    with pytest.raises(ValueError, match="mvcap_batch=64"):
        _fit(tree, tmp_path, tiny_train_cfg(data={"mvcap_batch": 64}))


def test_checkpoint_write_is_atomic(tmp_path):
    ckpt.save_checkpoint(tmp_path, 2, {"key": "k", "x": torch.ones(2)})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        ckpt.save_checkpoint(tmp_path, 4, {"key": "k", "x": torch.ones(2), "y": Boom()})
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000002.pt"]  # no partial file, no temp left
    (tmp_path / ".step-00000006.pt.abc.tmp").write_bytes(b"partial")  # a temp left by a SIGKILL
    assert ckpt.load_latest(tmp_path, "k")["x"].tolist() == [1.0, 1.0]
    assert ckpt.load_latest(tmp_path, "other") is None  # a different config never resumes


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads({threads})  # the parent's count: float reductions must add up in the same order
    from tests.train.fixtures import tiny_model_cfg, tiny_train_cfg, train_paths
    from ovt.train.stage import run
    cfg = tiny_train_cfg(**{cfg!r})

    def kill(step):
        if step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a real crash

    run(cfg, seed=5, paths=train_paths((Path({r!r}), Path({c!r})), Path({out!r})), model_cfg=tiny_model_cfg(),
        on_step=kill)
""")


@pytest.mark.slow
def test_kill_mid_epoch_then_resume_equals_uninterrupted(tree, tmp_path):
    over = dict(variants=["ovt"], model_mode="train", mining={"mode": "reuse"}, checkpoint_every=2)
    cfg = tiny_train_cfg(**over)
    r, c = (str(p) for p in tree)
    killed = tmp_path / "killed"
    script = _KILL_SCRIPT.format(cfg=over, kill_at=7, r=r, c=c, out=str(killed), threads=torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (killed / "ovt" / "train.json").exists()
    # step 7 is in epoch 1 (5 steps/epoch), after a reuse-mode mining pass; the last checkpoint is step 6
    assert ckpt.list_checkpoints(killed / "ovt" / "checkpoints")[-1].name == "step-00000006.pt"
    resumed = run(
        cfg,
        seed=5,
        paths=train_paths(tree, killed),
        model_cfg=tiny_model_cfg(),
    )
    assert resumed["ovt"]["resumed_from"] == 6 and resumed["ovt"]["steps"] == 10
    straight = tmp_path / "straight"
    run(
        cfg,
        seed=5,
        paths=train_paths(tree, straight),
        model_cfg=tiny_model_cfg(),
    )
    for f in ("adapter/adapter_model.safetensors", "viformer.safetensors"):
        a, b = load_file(killed / "ovt" / f), load_file(straight / "ovt" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    for name in ("loss", "lr", "loss_vc"):  # dvclive step logs: every step exactly once, as uninterrupted
        a = (killed / "train_metrics" / "ovt" / "plots" / "metrics" / f"{name}.tsv").read_text()
        assert a == (straight / "train_metrics" / "ovt" / "plots" / "metrics" / f"{name}.tsv").read_text(), name
        assert [line.split("\t")[0] for line in a.splitlines()[1:]] == [str(s) for s in range(1, 11)]
    # DVC deletes the non-persistent metrics folder before a rerun; a finished variant is skipped and rewrites it
    import shutil

    shutil.rmtree(killed / "train_metrics")
    again = run(
        cfg,
        seed=5,
        paths=train_paths(tree, killed),
        model_cfg=tiny_model_cfg(),
    )
    assert again["ovt"]["skipped"] is True
    for name in ("loss", "lr"):
        tsv = killed / "train_metrics" / "ovt" / "plots" / "metrics" / f"{name}.tsv"
        assert tsv.read_text() == (straight / "train_metrics" / "ovt" / "plots" / "metrics" / f"{name}.tsv").read_text()
    assert (killed / "train_metrics" / "metrics.json").is_file()
    # every metrics/plots path dvc.yaml declares for the train stage (of the variants trained here) exists
    import yaml

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    declared = [
        next(iter(e))
        for e in stage["metrics"] + stage.get("plots", []) + stage["outs"]
        if isinstance(e, dict) and next(iter(e.values())).get("cache") is False
    ]
    mine = [p for p in declared if p.split("/")[2] in ("ovt", "metrics.json")]
    assert len(mine) == 2, declared
    for path in mine:
        assert (killed / path.removeprefix("models/")).exists(), path

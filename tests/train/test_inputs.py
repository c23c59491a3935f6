"""What the trainable tail sees: the prefix cache's memory guard, and full-forward images from worker processes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from ovt.features.store import prefix_refusal
from ovt.train.config import TrainParams
from ovt.train.data import build_table
from ovt.train.distributed import DistContext
from ovt.train.inputs import MAX_PREFIX, RowImages, _Pending, resolve_workers
from ovt.train.loop import Trainer
from tests.train.fixtures import build_tiny, tiny_model_cfg, tiny_train_cfg


def _fit(tree, tmp: Path, cfg: TrainParams, model_cfg=None, variant="ovt", seed=3):
    torch.manual_seed(seed)
    model = build_tiny(model_cfg or tiny_model_cfg())
    tr = Trainer(
        model, build_table(cfg.data, *tree), cfg, variant=variant, seed=seed, work_dir=tmp, ctx=DistContext(), key="k"
    )
    stats = tr.fit(resume=False)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return stats, weights, tr


# ---- the prefix cache's memory guard ---------------------------------------------------------------------------
def test_prefix_refusal_names_the_estimate_and_the_param():
    assert prefix_refusal(3, 4096, 1000, 1.0, MAX_PREFIX) == ""
    over = prefix_refusal(3, 2**20, 4096, 1.0, MAX_PREFIX)  # 4 GiB
    assert "4.0 GiB" in over and "4096 rows" in over and "train.data.max_prefix_gib 1.0" in over
    assert "save no compute" in prefix_refusal(0, 4096, 10, 1.0, MAX_PREFIX)


def test_prefix_within_limit_is_cached(tree, tmp_path):
    stats, _, tr = _fit(tree, tmp_path, tiny_train_cfg(epochs=1, max_steps=1))
    assert stats["input"] == "cached prefix" and tr.inputs.prefix is not None and tr.inputs.prefix_reason == ""


def test_prefix_over_limit_falls_back_to_full_forward(tree, tmp_path, caplog):
    cfg = tiny_train_cfg(epochs=1, max_steps=2, data={"max_prefix_gib": 1e-6})
    with caplog.at_level(logging.WARNING, logger="ovt.train.inputs"):
        stats, _, tr = _fit(tree, tmp_path, cfg)
    assert stats["input"] == "full forward" and stats["steps"] == 2
    assert tr.inputs.prefix is None and "train.data.max_prefix_gib" in tr.inputs.prefix_reason
    assert tr.shared["prefix"] is None and "prefix_store" not in tr.shared  # nothing was encoded
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "GiB" in msg and "train.data.max_prefix_gib" in msg and "full forward" in msg
    # the refusal is the full forward's own result: the same weights as asking for no cache at all
    _, full, _ = _fit(tree, tmp_path / "full", tiny_train_cfg(epochs=1, max_steps=2, data={"cache_prefix": False}))
    _, refused, _ = _fit(tree, tmp_path / "again", cfg)
    assert all(torch.equal(full[n], refused[n]) for n in full)


def test_model_adapting_from_the_stem_runs_the_full_forward(tree, tmp_path, caplog):
    model_cfg = tiny_model_cfg(lora={"placement": "qkv", "last_blocks": 2})  # every block adapted
    with caplog.at_level(logging.WARNING, logger="ovt.train.inputs"):
        stats, _, tr = _fit(tree, tmp_path, tiny_train_cfg(epochs=1, max_steps=1), model_cfg)
    assert stats["input"] == "full forward" and "save no compute" in tr.inputs.prefix_reason
    assert any("save no compute" in r.getMessage() for r in caplog.records)


# ---- full forward from DataLoader workers ----------------------------------------------------------------------
def test_workers_default_to_none_without_cuda():
    assert resolve_workers(None, torch.device("cpu"), 1) == 0
    assert resolve_workers(3, torch.device("cpu"), 1) == 3
    assert 1 <= resolve_workers(None, torch.device("cuda", 0), 1) <= 8


def test_row_images_pickles_without_its_reader(tree):
    """Workers started by spawn/forkserver receive the dataset pickled: open shard handles must not travel."""
    import pickle

    from ovt.train.inputs import Augment

    cfg = tiny_train_cfg()
    table = build_table(cfg.data, *tree)
    ds = RowImages(table.pairs, build_tiny(tiny_model_cfg()).preprocess, Augment(), 0)
    x = ds.image(0, 1)
    assert ds._reader is not None
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._reader is None and torch.equal(copy.image(0, 1), x)
    copy.close()
    ds.close()


@pytest.fixture
def worker_pids(tmp_path, monkeypatch):
    """Every process that decodes a row through RowImages writes its pid here (forked workers inherit the patch)."""
    folder = tmp_path / "pids"
    folder.mkdir()
    original = RowImages.__getitem__

    def spy(self, item):
        (folder / str(os.getpid())).touch()
        return original(self, item)

    monkeypatch.setattr(RowImages, "__getitem__", spy)
    return folder


def test_worker_processes_give_the_in_process_batches(tree, tmp_path, worker_pids):
    """Two epochs (two mining passes, a plan per epoch), augmented: the same losses, mined sets and weights."""
    data = {"cache_prefix": False, "augment": True}
    base = dict(epochs=2, max_steps=6)
    s0, w0, t0 = _fit(tree, tmp_path / "a", tiny_train_cfg(**base, data={**data, "num_workers": 0}))
    assert not any(worker_pids.iterdir())  # num_workers 0: decoded in the training process, no DataLoader
    s2, w2, t2 = _fit(tree, tmp_path / "b", tiny_train_cfg(**base, data={**data, "num_workers": 2}))
    pids = {int(p.name) for p in worker_pids.iterdir()}
    assert pids and os.getpid() not in pids  # the workers decoded, not this process
    assert s0["input"] == s2["input"] == "full forward" and s2["steps"] == 6
    assert [r["loss"] for r in t0.tracker.rows] == [r["loss"] for r in t2.tracker.rows]
    assert [e["mined/hard_views"] for e in t0.tracker.events] == [e["mined/hard_views"] for e in t2.tracker.events]
    assert len(t2.tracker.events) == 2
    assert all(torch.equal(w0[n], w2[n]) for n in w0)
    assert t2.inputs._loader is None  # fit() shut the persistent workers down


@pytest.mark.parametrize("splits", [[6], [1, 5], [2, 2, 2], [3, 3], [4, 1, 1], [1, 1, 1, 1, 1, 1]])
def test_pending_hands_out_the_plan_in_any_split(splits):
    rows = torch.tensor([3, 1, 2, 5, 9, 8])
    pending, at = _Pending([rows[:3], rows[3:4], rows[4:]], epoch=2), 0
    for n in splits:
        with pytest.raises(RuntimeError, match="announced plan"):  # a wrong ask moves nothing
            pending.take(rows[at : at + n] + 100, 2)
        with pytest.raises(RuntimeError, match="epoch 1"):
            pending.take(rows[at : at + n], 1)
        pending.take(rows[at : at + n], 2)
        at += n
        assert pending.left == rows.numel() - at
    assert not pending


def test_plan_is_enforced(tree, tmp_path):
    cfg = tiny_train_cfg(epochs=1, max_steps=1, data={"cache_prefix": False, "num_workers": 1})
    model = build_tiny(tiny_model_cfg())
    tr = Trainer(model, build_table(cfg.data, *tree), cfg, variant="contrastive", seed=0, work_dir=tmp_path,
                 ctx=DistContext(), key="k")  # fmt: skip
    tr.prepare(resume=False)
    try:
        inputs = tr.inputs
        inputs.plan([torch.tensor([3, 1, 2]), torch.tensor([5])])
        a = inputs(torch.tensor([3, 1]))  # any split of the plan into calls
        b = inputs(torch.tensor([2, 5]))
        assert torch.equal(torch.cat([a, b]), inputs.images(torch.tensor([3, 1, 2, 5])))
        assert not inputs._pending
        inputs.plan([torch.tensor([4, 6])])
        with pytest.raises(RuntimeError, match="announced plan"):
            inputs(torch.tensor([6]))
        # the unplanned path decodes in process
        inputs.plan([])
        assert torch.equal(inputs(torch.tensor([7])), inputs.images(torch.tensor([7])))
    finally:
        tr.inputs.close()


def test_prefix_encoding_pass_through_workers_gives_the_same_cache(tree, tmp_path, worker_pids):
    cfg0 = tiny_train_cfg(epochs=1, max_steps=2, data={"num_workers": 0})
    cfg1 = tiny_train_cfg(epochs=1, max_steps=2, data={"num_workers": 1})
    s0, w0, t0 = _fit(tree, tmp_path / "a", cfg0)
    s1, w1, t1 = _fit(tree, tmp_path / "b", cfg1)
    assert s0["input"] == s1["input"] == "cached prefix"
    assert {int(p.name) for p in worker_pids.iterdir()} - {os.getpid()}  # the encoding pass read from a worker
    assert t0.inputs.prefix is not None and t1.inputs.prefix is not None
    assert torch.equal(t0.inputs.prefix, t1.inputs.prefix) and all(torch.equal(w0[n], w1[n]) for n in w0)
    assert t1.inputs._loader is None  # shut down once the prefix was built


def test_resume_mid_epoch_with_workers_equals_uninterrupted(tree, tmp_path):
    """The plan starts at the resumed step; the reuse mode's second pass decodes its few rows in process."""
    cfg = tiny_train_cfg(
        checkpoint_every=2,
        mining={"mode": "reuse"},
        data={"cache_prefix": False, "augment": True, "num_workers": 1},
    )

    def trainer(work: Path, on_step=None) -> Trainer:
        torch.manual_seed(3)
        return Trainer(build_tiny(tiny_model_cfg()), build_table(cfg.data, *tree), cfg, variant="ovt", seed=3,
                       work_dir=work, ctx=DistContext(), key="k", on_step=on_step)  # fmt: skip

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == 7:  # epoch 1, after the last checkpoint (step 6)
            raise Killed

    first = trainer(tmp_path / "killed", kill)
    with pytest.raises(Killed):
        first.fit(resume=False)
    first.inputs.close()
    resumed = trainer(tmp_path / "killed")
    stats = resumed.fit(resume=True)
    straight = trainer(tmp_path / "straight")
    straight.fit(resume=False)
    assert stats["resumed_from"] == 6 and stats["steps"] == 10
    a = {n: p for n, p in resumed.model.named_parameters() if p.requires_grad}
    b = {n: p for n, p in straight.model.named_parameters() if p.requires_grad}
    assert all(torch.equal(a[n], b[n]) for n in a)

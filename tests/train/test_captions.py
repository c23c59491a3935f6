"""The caption bank: rank-sharded parts, storage dtypes, a build killed midway; the Trainer's caption embeddings."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ovt.train.captions import CaptionBank
from ovt.train.data import build_table
from ovt.train.distributed import DistContext
from ovt.train.loop import Trainer
from tests.train.fixtures import build_tiny, run_torchrun, tiny_model_cfg, tiny_train_cfg


def _toy(batch):
    return torch.tensor([[float(len(t)), float(t.split()[-1]) / 3.0] for t in batch])


def test_rank_sharded_bank_parts_agree_with_a_single_rank(tmp_path):
    texts = [f"caption {i}" for i in range(11)]
    for r in range(3):
        CaptionBank.build(tmp_path / "sharded", lambda: texts, _toy, encoder_key="e", rank=r, world=3)
    single = CaptionBank.build(tmp_path / "single", lambda: texts, _toy, encoder_key="e")
    sharded = CaptionBank(tmp_path / "sharded")
    assert sharded.world == 3
    assert torch.equal(sharded.lookup(texts), single.lookup(texts))
    assert torch.allclose(single.lookup(texts), _toy(texts), atol=1e-3)  # float16 storage by default


def test_parts_are_filled_on_disk_and_are_plain_npy_files(tmp_path):
    texts = [f"caption {i}" for i in range(9)]
    bank = CaptionBank.build(tmp_path, lambda: texts, _toy, encoder_key="e", rank=0, world=1, dtype="float32")
    part = np.load(tmp_path / "emb-0-of-1.npy")  # a regular .npy, loadable without a mapping
    assert part.dtype == np.float32 and part.shape == (9, 2)
    assert torch.equal(bank.lookup(texts), _toy(texts))
    assert not list(tmp_path.glob(".*.tmp"))  # the memory-mapped temporary was renamed into place

    def broken(batch):
        raise RuntimeError("tower failed")

    with pytest.raises(RuntimeError, match="tower failed"):
        CaptionBank.build(tmp_path / "b", lambda: texts, broken, encoder_key="e")
    assert not list((tmp_path / "b").glob("*"))  # neither a part, nor its temporary, nor a record


def test_float32_storage_keeps_the_encoders_numbers(tmp_path):
    texts = [f"caption {i}" for i in range(7)]
    calls: list[str] = []

    def encode(batch):
        calls.extend(batch)
        return _toy(batch)

    half = CaptionBank.build(tmp_path / "b", lambda: texts, encode, encoder_key="e")
    assert half.dtype == np.float16 and not torch.equal(half.lookup(texts), _toy(texts))  # 1/3 does not round-trip
    full = CaptionBank.build(tmp_path / "b", lambda: texts, encode, encoder_key="e", dtype="float32")
    assert len(calls) == 2 * len(texts), "a float16 part must not be reused as float32"
    assert full.dtype == np.float32 and json.loads((tmp_path / "b" / "bank.json").read_text())["dtype"] == "float32"
    out = full.rows(full.index(texts))
    assert out.dtype == torch.float32 and torch.equal(out, _toy(texts))
    with pytest.raises(ValueError, match="dtype"):
        CaptionBank.build(tmp_path / "c", lambda: texts, encode, encoder_key="e", dtype="bfloat16")


def test_a_build_killed_midway_redoes_only_the_unfinished_parts(tmp_path):
    texts = [f"caption {i}" for i in range(20)]
    calls: dict[int, list[str]] = {0: [], 1: []}

    def encoder(rank, fail_after=None):
        def encode(batch):
            if fail_after is not None and len(calls[rank]) >= fail_after:
                raise RuntimeError("killed")
            calls[rank].extend(batch)
            return _toy(batch)

        return encode

    def build(rank, **kw):
        return CaptionBank.build(
            tmp_path, lambda: texts, encoder(rank, **kw), encoder_key="e", rank=rank, world=2, batch_size=3
        )

    build(0)
    with pytest.raises(RuntimeError, match="killed"):
        build(1, fail_after=3)  # rank 1 dies after one batch: its part is never written
    assert not (tmp_path / "emb-1-of-2.npy").exists() and len(calls[1]) == 3
    calls[0].clear(), calls[1].clear()
    build(0)
    bank = build(1)
    assert calls[0] == [] and sorted(calls[1]) == sorted(
        t for t, pos in zip(texts, bank.index(texts).tolist()) if pos % 2
    )
    assert torch.equal(bank.lookup(texts), _toy(texts).half().float())
    # a part whose bytes are damaged (its key file intact) is rebuilt, not read
    (tmp_path / "emb-0-of-2.npy").write_bytes(b"garbage")
    calls[1].clear()
    build(0)
    assert len(calls[0]) == 10 and torch.equal(CaptionBank(tmp_path).lookup(texts), _toy(texts).half().float())


def _trainer(tree, tmp, cfg=None):
    torch.manual_seed(3)
    cfg = cfg or tiny_train_cfg(epochs=1, max_steps=1)
    model = build_tiny(tiny_model_cfg())
    return Trainer(
        model, build_table(cfg.data, *tree), cfg, variant="ovt", seed=3, work_dir=tmp, ctx=DistContext(), key="k"
    )


def test_trainer_caption_embeddings_are_the_text_towers(tree, tmp_path):
    tr = _trainer(tree, tmp_path)
    tr.prepare(resume=False)
    pairs = tr.table.pairs
    rows = torch.arange(len(pairs))
    got = tr.text[rows]
    torch.manual_seed(3)
    fresh = build_tiny(tiny_model_cfg())  # another instance: its own per-string cache is empty
    want = fresh.encode_text([p.text for p in pairs])
    assert got.dtype == torch.float32 and got.shape == (len(pairs), tr.dim) and tr.dim == 32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert tr.model._text_cache == {}, "the bank is the one copy: the model keeps no per-caption embeddings"
    # the caption identity per row (multi-positive ITC): equal exactly when the captions are
    ident = tr.text.row_caption
    assert ident.dtype == torch.int64 and ident.shape == (len(pairs),)
    same = ident[:, None] == ident[None, :]
    texts = [p.text for p in pairs]
    assert torch.equal(same, torch.tensor([[a == b for b in texts] for a in texts]))
    # standalone, the trainer keeps its bank in its work folder; a second trainer there encodes nothing
    assert (tmp_path / "text_cache" / "bank.json").is_file()
    again = _trainer(tree, tmp_path)
    calls = []
    real = again.model.encode_text
    again.model.encode_text = lambda t, **kw: calls.append(t) or real(t, **kw)
    again.prepare(resume=False)
    assert calls == [] and torch.equal(again.text[rows], got)


@pytest.mark.slow
def test_two_ranks_each_encode_their_share_and_read_the_same_embeddings(tree, tmp_path):
    run_torchrun("tests.train.captions_worker", *tree, tmp_path)
    encoded = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    table = build_table(tiny_train_cfg().data, *tree)
    distinct = {p.text for p in table.pairs}
    assert encoded[0] and encoded[1], "both ranks encode a share"
    assert len(encoded[0]) == len(set(encoded[0])) and len(encoded[1]) == len(set(encoded[1]))
    assert not set(encoded[0]) & set(encoded[1]) and set(encoded[0]) | set(encoded[1]) == distinct
    a, b = (load_file(tmp_path / f"rank{r}.safetensors")["emb"] for r in range(2))
    assert a.shape == (len(table.pairs), 32) and torch.equal(a, b)
    torch.manual_seed(0)
    want = build_tiny(tiny_model_cfg()).encode_text([p.text for p in table.pairs])
    torch.testing.assert_close(a, want, rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "bank" / "bank.json").read_text())["world"] == 2

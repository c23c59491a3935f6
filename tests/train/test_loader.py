"""The paper-scale input pipeline: shards -> worker processes -> batches, and the shared caption bank."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovt import shards
from ovt.train.captions import CaptionBank
from ovt.train.loader import (
    LoaderError,
    LoaderSpec,
    make_loader,
    shard_tars,
)

N_SHARDS, PER_SHARD = 5, 7


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (i * 7 % 256, i * 13 % 256, 40)).save(buf, format="PNG")
    return buf.getvalue()


def _caption(i: int) -> str:
    return f"a render of object {i // 3}, seen from side {i % 3}"


def write_shards(folder: Path, n_shards: int = N_SHARDS, per_shard: int = PER_SHARD) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for s in range(n_shards):
        samples = []
        for j in range(per_shard):
            i = s * per_shard + j
            key = f"obj{i // 3:03d}_{i % 3:03d}"
            keys.append(key)
            samples.append(
                {
                    "__key__": key,
                    "png": _png(i),
                    "json": {"caption": _caption(i), "obj_id": i // 3, "view": i % 3, "img_id": i},
                }
            )
        tar = folder / f"{shards.shard_name(s)}.tar"
        with open(tar, "wb") as fh:
            shards.write_samples(fh, samples)
        shards.write_record(tar, {"key": f"test-{s}"})
    return keys


def to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 255.0


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("loader") / "shards"
    return folder, write_shards(folder)


def epoch_keys(tars, *, seed=0, epoch=0, rank=0, world=1, workers=2, bank=None, batch=4) -> list[list[str]]:
    loader = make_loader(
        tars,
        to_tensor,
        LoaderSpec(batch_size=batch, num_workers=workers, shuffle_buffer=4),
        seed=seed,
        rank=rank,
        world=world,
        bank=bank,
    )
    loader.dataset.set_epoch(epoch)
    return [b.keys for b in loader]


def test_every_sample_once_per_epoch_with_two_workers(shard_dir):
    folder, keys = shard_dir
    tars = shard_tars(folder)
    loader = make_loader(tars, to_tensor, LoaderSpec(batch_size=4, num_workers=2, shuffle_buffer=4), seed=3)
    seen = []
    for b in loader:
        assert b.images.shape[1:] == (3, 16, 16) and b.images.dtype == torch.float32
        assert len(b.texts) == len(b.objects) == len(b.keys) == b.views.numel() == b.images.shape[0]
        for k, t, o, v in zip(b.keys, b.texts, b.objects, b.views.tolist()):
            i = int(k[3:6]) * 3 + int(k[-3:])
            assert t == _caption(i) and o == str(i // 3) and v == i % 3
        seen += b.keys
    assert sorted(seen) == sorted(keys)  # each once, none missing


def test_order_is_a_function_of_seed_and_epoch(shard_dir):
    tars = shard_tars(shard_dir[0])
    a, b = epoch_keys(tars, seed=1, epoch=0), epoch_keys(tars, seed=1, epoch=0)
    assert a == b
    assert epoch_keys(tars, seed=1, epoch=1) != a
    assert epoch_keys(tars, seed=2, epoch=0) != a
    flat = [k for batch in epoch_keys(tars, seed=1, epoch=1) for k in batch]
    assert sorted(flat) == sorted(k for batch in a for k in batch)


def test_ranks_partition_the_epoch(shard_dir):
    folder, keys = shard_dir
    tars = shard_tars(folder)
    parts = [[k for b in epoch_keys(tars, seed=5, rank=r, world=2, workers=1) for k in b] for r in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(keys)


def test_caption_bank_embeds_each_caption_once_and_is_looked_up_in_workers(shard_dir, tmp_path):
    folder = shard_dir[0]
    texts = [_caption(i) for i in range(N_SHARDS * PER_SHARD)]
    calls: list[str] = []

    def encode(batch: list[str]) -> torch.Tensor:
        calls.extend(batch)
        return torch.stack([torch.tensor([len(t), sum(map(ord, t)) % 97, 1.0, -2.0]) for t in batch])

    bank = CaptionBank.build(tmp_path / "bank", lambda: texts + texts[:5], encode, encoder_key="toy", batch_size=3)
    assert sorted(calls) == sorted(set(texts))  # duplicates are encoded once
    assert bank.count == len(set(texts)) and bank.dim == 4
    # a rerun with the same captions and encoder reuses the folder
    again = CaptionBank.build(tmp_path / "bank", lambda: texts, encode, encoder_key="toy")
    assert len(calls) == len(set(texts)) and again.count == bank.count
    tars = shard_tars(folder)
    loader = make_loader(tars, to_tensor, LoaderSpec(batch_size=5, num_workers=2), seed=0, bank=bank)
    for b in loader:
        assert torch.allclose(b.text_emb, encode(b.texts), atol=0.05)  # float16 storage
    with pytest.raises(KeyError, match="not in the bank"):
        bank.lookup(["a caption nobody wrote"])


def test_bad_samples_and_incomplete_shards_are_named(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    tar = folder / "shard-00000.tar"
    with open(tar, "wb") as fh:
        shards.write_samples(fh, [{"__key__": "k1", "json": {"caption": "x", "obj_id": 1}}])
    shards.write_record(tar, {"key": "b"})
    loader = make_loader([tar], to_tensor, LoaderSpec(batch_size=2, num_workers=0))
    with pytest.raises(LoaderError, match="k1 has no image member"):
        list(loader)
    (folder / "shard-00001.tar").write_bytes(b"half written")
    with pytest.raises(LoaderError, match="incomplete shards"):
        shard_tars(folder)
    nocap = tmp_path / "nocap.tar"
    with open(nocap, "wb") as fh:
        shards.write_samples(fh, [{"__key__": "k2", "png": _png(1), "json": json.dumps({"obj_id": 3})}])
    with pytest.raises(LoaderError, match="k2 has no caption"):
        list(make_loader([nocap], to_tensor, LoaderSpec(batch_size=1, num_workers=0)))

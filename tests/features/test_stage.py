"""The frozen-feature pass: exactness against the full tower, resume per shard, refusal, lookup by rows."""

from __future__ import annotations

import json

import pytest
import torch

from ovt.features import FeatureParams, FeaturePaths, open_store, run
from ovt.features.stage import build_frozen_tower
from ovt.shards import decode_rgb, iter_samples
from tests.train.fixtures import make_tree, tiny_model_cfg


@pytest.fixture
def renders(tmp_path):
    return make_tree(tmp_path / "data")[0]


def _rows(renders):
    return [json.loads(line) for line in (renders / "manifest.jsonl").read_text().splitlines()]


def _run(renders, out, model_cfg=None, **over):
    return run(
        FeatureParams(dtype="float32", **over),
        model=model_cfg or tiny_model_cfg(),
        seed=0,
        paths=FeaturePaths(renders_dir=renders, out_dir=out, stats=out.parent / "features.json"),
        progress=False,
    )


def test_tail_of_cached_prefix_equals_the_full_tower(renders, tmp_path):
    stats = _run(renders, tmp_path / "f")
    assert stats["shards_computed"] == 1 and stats["prefix_cached"] and stats["first_adapted"] == 1
    rows = _rows(renders)[:5]
    store = open_store(tmp_path / "f", tiny_model_cfg())
    prefix, pooled = store.lookup(rows[::-1])  # any row order comes back in that order
    tower = build_frozen_tower(tiny_model_cfg())
    pngs = dict((k, m["png"]) for k, m in iter_samples(renders / rows[0]["shard"]))
    images = torch.stack([tower.preprocess(decode_rgb(pngs[r["key"]])) for r in rows[::-1]])
    full = tower.split.pooled(images, -1)
    assert torch.allclose(pooled, full, atol=1e-5)
    assert torch.allclose(tower.split.pooled(prefix, store.first_adapted), full, atol=1e-5)


def test_rerun_reuses_and_a_lost_record_recomputes_only_its_shard(renders, tmp_path):
    out = tmp_path / "f"
    _run(renders, out)
    again = _run(renders, out)
    assert again["shards_computed"] == 0 and again["shards_reused"] == 1
    store_dir = open_store(out, tiny_model_cfg()).folder
    (store_dir / "shard-00000.json").unlink()  # a pass killed after the tensors, before the commit
    assert _run(renders, out)["shards_computed"] == 1


def test_prefix_refused_when_it_would_not_fit(renders, tmp_path):
    stats = _run(renders, tmp_path / "f", max_prefix_gib=1e-9)
    assert not stats["prefix_cached"] and "max_prefix_gib" in stats["prefix_reason"]
    store = open_store(tmp_path / "f", tiny_model_cfg())
    prefix, pooled = store.lookup(_rows(renders)[:3])
    assert prefix is None and pooled.shape == (3, 64)


def test_no_frozen_block_means_no_prefix_cache(renders, tmp_path):
    cfg = tiny_model_cfg(lora={"placement": "qkv", "last_blocks": None})
    stats = _run(renders, tmp_path / "f", model_cfg=cfg)
    assert stats["first_adapted"] == 0 and not stats["prefix_cached"] and "save no compute" in stats["prefix_reason"]


def test_each_frozen_configuration_has_its_own_folder_and_misses_are_named(renders, tmp_path):
    out = tmp_path / "f"
    _run(renders, out)
    with pytest.raises(FileNotFoundError, match="no features for the model configuration"):
        open_store(out, tiny_model_cfg(lora={"placement": "attn", "last_blocks": 1}))
    _run(renders, out, model_cfg=tiny_model_cfg(lora={"placement": "attn", "last_blocks": 1}))
    assert len(list(out.glob("*/tower.json"))) == 2
    rows = _rows(renders)
    with pytest.raises(KeyError, match="no features for view"):
        open_store(out, tiny_model_cfg()).lookup([{**rows[0], "key": "nope_000"}])
    with pytest.raises(FileNotFoundError, match="features folder not found"):
        open_store(tmp_path / "absent", tiny_model_cfg())

"""The stage: variants into models/<variant>/, idempotence, λ retrains only ovt, per-item failures."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import torch

from ovt.model import OVTModel
from ovt.train.stage import run
from tests.train.fixtures import make_tree, stage_layout, tiny_model_cfg, tiny_train_cfg, train_paths


def _run(cfg, tree, out):
    return run(cfg, seed=2, paths=train_paths(tree, out), model_cfg=tiny_model_cfg())


def test_variants_idempotent_and_lambda_retrains(tree, tmp_path):
    cfg = tiny_train_cfg(epochs=1, variants=["zeroshot", "contrastive", "ovt"])
    first = _run(cfg, tree, tmp_path)
    assert first["ovt"]["steps"] == 5 and first["zeroshot"]["steps"] == 0
    for v in ("zeroshot", "contrastive", "ovt"):
        assert (tmp_path / v / "adapter" / "adapter_model.safetensors").is_file()
        meta = json.loads((tmp_path / v / "model.json").read_text())
        assert meta["train"]["variant"] == v
    assert json.loads((tmp_path / "zeroshot" / "train.json").read_text())["adapter_scale"] == 0.0
    metrics = json.loads((tmp_path / "train_metrics" / "metrics.json").read_text())
    assert metrics["ovt"]["final_loss_vc"] > 0 and metrics["contrastive"]["final_loss_vc"] == 0
    again = _run(cfg, tree, tmp_path)
    assert all(s.get("skipped") for s in again.values())
    changed = _run(
        tiny_train_cfg(epochs=1, variants=["zeroshot", "contrastive", "ovt"], loss={"lam": 2.0}), tree, tmp_path
    )
    assert changed["contrastive"].get("skipped") and changed["zeroshot"].get("skipped")
    assert not changed["ovt"].get("skipped") and changed["ovt"]["resumed_from"] is None
    # the published folder loads through the model interface and reproduces the trained encoder
    m = OVTModel.load(tmp_path / "ovt")
    x = torch.rand(2, 3, 32, 32)
    assert m.encode_image(x).shape == (2, 32)


def test_unreadable_image_logged_and_skipped(tmp_path):
    renders, captions = make_tree(tmp_path / "data")
    shard = renders / "shards" / "shard-00000.tar"
    rows = [json.loads(l) for l in (renders / "manifest.jsonl").read_text().splitlines()]
    bad_key = rows[3]["key"]
    with tarfile.open(shard) as src, tarfile.open(tmp_path / "new.tar", "w") as dst:
        for m in src.getmembers():
            data = b"not a png" if m.name == f"{bad_key}.png" else src.extractfile(m).read()
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    shutil.move(tmp_path / "new.tar", shard)
    stats = run(
        tiny_train_cfg(epochs=1, variants=["contrastive"]),
        seed=2,
        paths=train_paths((renders, captions), tmp_path / "models"),
        model_cfg=tiny_model_cfg(),
    )
    assert stats["contrastive"]["mv_pairs"] == 39
    fail = [json.loads(l) for l in (tmp_path / "models/train_metrics/failures.jsonl").read_text().splitlines()]
    assert fail[0]["item"] == bad_key and fail[0]["stage"] == "train"


def test_stage_entry_reads_params_yaml_and_runs_on_dvc_paths(tree, tmp_path, monkeypatch, capsys):
    """`python -m stages.train` as a single process (rank 0 of 1): the whole params.yaml is validated, then the
    stage runs on the paths dvc.yaml declares (TrainPaths' defaults, relative to the repository root)."""
    import pytest
    import yaml

    from ovt.entry import stage_main
    from ovt.train import TrainPaths
    from stages.train import _run

    cfg = tiny_train_cfg(epochs=1, variants=["contrastive"])
    params = {
        "base": {"seed": 4},
        "model": tiny_model_cfg().model_dump(mode="json"),
        "train": cfg.model_dump(mode="json"),
    }
    stage_layout(tmp_path, tree, params)
    monkeypatch.chdir(tmp_path)
    paths = TrainPaths()
    stage_main(_run)
    metrics = json.loads((Path(paths.out_dir) / "train_metrics" / "metrics.json").read_text())
    assert metrics["contrastive"]["steps"] == 5
    record = json.loads((Path(paths.out_dir) / "contrastive" / "train.json").read_text())
    assert record["seed"] == 4 and record["inputs"]["features"] is not None
    Path("bad.yaml").write_text(yaml.safe_dump({**params, "train": {"lamda": 1}}))
    with pytest.raises(SystemExit) as exit_:  # a params error is one clear line and exit code 2, never a traceback
        stage_main(_run, params_path="bad.yaml")
    assert exit_.value.code == 2 and "train.lamda" in capsys.readouterr().err


def test_base_key_ignores_the_bootstraps_timings(tree, tmp_path):
    """Only the base's weights and content key feed the variant keys and the caption cache key: a bootstrap rerun
    that differs in wall time alone changes neither."""
    from safetensors.torch import save_file

    from ovt.train import stage

    base = tmp_path / "base"
    base.mkdir()
    save_file({"w": torch.ones(2)}, str(base / "base.safetensors"))
    meta = {"key": "k1", "embed_dim": 32, "stats": {"feature_s": 1.5, "total_s": 9.25, "n_train_views": 8}}
    (base / "base.json").write_text(json.dumps(meta))
    (base / "metrics.json").write_text(json.dumps({"loss_after": 0.5}))
    cfg, model = tiny_train_cfg(), tiny_model_cfg()

    def keys():
        inputs = stage.input_digest(tree[0], tree[1], base, cfg)
        return stage.variant_key(cfg, "ovt", 2, inputs, model), stage.text_key(inputs, model)

    first = keys()
    (base / "base.json").write_text(json.dumps({**meta, "stats": {**meta["stats"], "feature_s": 2.0, "total_s": 11.0}}))
    (base / "failures.jsonl").write_text("")
    assert keys() == first, "a timing-only change in base.json changed the keys"
    (base / "base.json").write_text(json.dumps({**meta, "key": "k2"}))
    assert keys()[0] != first[0] and keys()[1] != first[1], "a new base content key must change the keys"
    (base / "base.json").write_text(json.dumps(meta))
    save_file({"w": torch.zeros(2)}, str(base / "base.safetensors"))
    assert keys()[0] != first[0] and keys()[1] != first[1], "new base weights must change the keys"


def test_heldout_viewpoint_variants_train_on_their_bands_only(tree, tmp_path):
    cfg = tiny_train_cfg(
        epochs=1,
        variants=["ovt"],
        heldout_viewpoints={"enabled": True, "variants": ["ovt"], "train_bands": [(-90.0, 10.0)]},
    )
    stats = _run(cfg, tree, tmp_path)
    assert set(stats) == {"ovt", "ovt_hv"}
    rec = json.loads((tmp_path / "ovt_hv" / "train.json").read_text())
    assert rec["variant"] == "ovt_hv" and rec["elevation_bands"] == [[-90.0, 10.0]]
    assert rec["lambda"] == cfg.loss.lam  # an `_hv` variant is the same method, trained on fewer viewpoints
    assert 0 < stats["ovt_hv"]["mv_pairs"] < stats["ovt"]["mv_pairs"]
    a = OVTModel.load(tmp_path / "ovt").encode_image(torch.rand(2, 3, 32, 32))
    b = OVTModel.load(tmp_path / "ovt_hv").encode_image(torch.rand(2, 3, 32, 32))
    assert a.shape == b.shape
    assert all(s.get("skipped") for s in _run(cfg, tree, tmp_path).values())


def test_train_reads_the_prefix_from_the_feature_store(tree, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from ovt.features import FeatureParams, FeaturePaths
    from ovt.features import run as run_features

    def features(out, **over):
        run_features(
            FeatureParams(dtype="float32", **over),
            model=tiny_model_cfg(),
            seed=0,
            progress=False,
            paths=FeaturePaths(renders_dir=tree[0], out_dir=out, stats=tmp_path / "f.json"),
        )
        return out

    cfg = tiny_train_cfg(epochs=1, variants=["ovt"])
    plain = _run(cfg, tree, tmp_path / "plain")  # no store: the prefix is computed in process
    stored_dir = features(tmp_path / "features")

    def no_tower(self, images):
        raise AssertionError("the frozen tower ran although the feature store holds the prefix")

    with monkeypatch.context() as m:
        m.setattr(OVTModel, "image_prefix", no_tower)
        stored = run(
            cfg,
            seed=2,
            paths=train_paths(tree, tmp_path / "stored", features_dir=stored_dir),
            model_cfg=tiny_model_cfg(),
        )
    assert stored["ovt"]["input"] == "cached prefix" and plain["ovt"]["mv_pairs"] == stored["ovt"]["mv_pairs"]
    a = load_file(tmp_path / "plain" / "ovt" / "viformer.safetensors")
    b = load_file(tmp_path / "stored" / "ovt" / "viformer.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    # a store that refused the prefix (too big): every step runs the full tower on decoded images
    refused = features(tmp_path / "refused", max_prefix_gib=1e-9)
    full = run(
        cfg,
        seed=2,
        paths=train_paths(tree, tmp_path / "full", features_dir=refused),
        model_cfg=tiny_model_cfg(),
    )
    assert full["ovt"]["input"] == "full forward" and full["ovt"]["steps"] == 5


def test_bf16_without_cuda_warns_and_runs_fp32():
    import pytest

    from ovt.train.step import resolve_precision

    with pytest.warns(RuntimeWarning, match="falling back to fp32"):
        assert resolve_precision("bf16", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"


def test_caption_embeddings_are_encoded_once_per_run_and_persist_across_runs(tree, tmp_path, monkeypatch):
    """All variants, seed replicates and held-out-viewpoint variants of a run read one caption bank: every caption
    is encoded once; a second run with the same inputs encodes none; a damaged bank is rebuilt, never fatal."""
    from ovt.model import ovt_model
    from ovt.train import stage
    from ovt.train.captions import CaptionBank
    from ovt.train.data import build_table

    calls: list[str] = []
    real = ovt_model.OVTModel.encode_text
    monkeypatch.setattr(ovt_model.OVTModel, "encode_text", lambda self, t, **kw: calls.extend(t) or real(self, t, **kw))
    old = tmp_path / stage.TEXT_CACHE
    (old / "0123456789abcdef").mkdir(parents=True)  # another text tower's bank, and a pre-bank cache file
    (old / "0123456789abcdef.safetensors").write_bytes(b"old")

    def cfg(**over):
        hv = {"enabled": True, "variants": ["ovt"], "train_bands": [(-90.0, 10.0)]}
        return tiny_train_cfg(
            epochs=1, max_steps=1, variants=["contrastive", "ovt"], seeds=2, seed_variants=["ovt"],
            heldout_viewpoints=hv, **over,
        )  # fmt: skip

    first = _run(cfg(), tree, tmp_path)
    assert set(first) == {"contrastive", "ovt", "ovt_seed1", "ovt_hv"}
    distinct = {p.text for p in build_table(cfg().data, *tree).pairs}
    assert len(calls) == len(set(calls)) and set(calls) == distinct, "each caption of the run encoded once"
    (bank_dir,) = (tmp_path / stage.TEXT_CACHE).iterdir()  # the other towers' caches are gone
    bank = CaptionBank(bank_dir)
    assert bank.count == len(distinct) and bank.meta["dtype"] == "float32"
    # a fresh text tower gives the stored embeddings (the bank changes the cost, not the numbers)
    texts = sorted(distinct)[:3]
    model = ovt_model.build_ovt_model(
        tiny_model_cfg(), __import__("ovt.model").model.build_base(tiny_model_cfg(), None)
    )
    stored = bank.lookup(texts)
    torch.testing.assert_close(real(model, texts), stored, rtol=0, atol=1e-6)

    calls.clear()
    again = _run(cfg(loss={"lam": 2.0}), tree, tmp_path)  # retrains the ovt models
    assert not again["ovt"].get("skipped") and not again["ovt_hv"].get("skipped")
    assert calls == [], "the second run re-encoded captions the bank holds"
    (bank_dir / "emb-0-of-1.npy").write_bytes(b"garbage")  # a damaged bank is rebuilt, never fatal
    _run(cfg(loss={"lam": 3.0}), tree, tmp_path)
    assert sorted(calls) == sorted(distinct)
    assert torch.equal(CaptionBank(bank_dir).lookup(texts), stored)


def test_seed_replicates_train_beside_the_registered_seed(tree, tmp_path):
    cfg = tiny_train_cfg(epochs=1, variants=["contrastive", "ovt"], seeds=3, seed_variants=["ovt"])
    stats = _run(cfg, tree, tmp_path)
    assert set(stats) == {"contrastive", "ovt", "ovt_seed1", "ovt_seed2"}
    seeds = [
        json.loads((tmp_path / "ovt" / sub / "train.json").read_text())["seed"] for sub in ("", "seeds/1", "seeds/2")
    ]
    assert seeds == [2, 3, 4]
    assert not (tmp_path / "contrastive" / "seeds").exists()
    x = torch.rand(2, 3, 32, 32)
    a, b = (OVTModel.load(p).encode_image(x) for p in (tmp_path / "ovt", tmp_path / "ovt" / "seeds" / "1"))
    assert not torch.allclose(a, b)  # another seed, another model
    flat = json.loads((tmp_path / "train_metrics" / "metrics.json").read_text())
    assert set(flat) == set(stats)
    # dvclive folders (dvc plots) belong to the registered seed only
    assert sorted(p.name for p in (tmp_path / "train_metrics").iterdir() if p.is_dir()) == ["contrastive", "ovt"]
    # the replicate count is not part of a model's key: fewer seeds retrain nothing, and the seed-2 model is kept
    fewer = _run(cfg.model_copy(update={"seeds": 2}), tree, tmp_path)
    assert set(fewer) == {"contrastive", "ovt", "ovt_seed1"} and all(s.get("skipped") for s in fewer.values())


def test_seed_variants_must_be_trained():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="seed_variants"):
        tiny_train_cfg(variants=["ovt"], seeds=2, seed_variants=["contrastive"])

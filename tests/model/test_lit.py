import json

import pytest
import torch
from safetensors.torch import load_file

from ovt.config import Params
from ovt.features import FeatureParams, FeaturePaths
from ovt.features import run as run_features
from ovt.model import ModelParams, build_base, lit
from ovt.model.config import BootstrapParams
from ovt.model.factory import load_trained_parts
from ovt.model.stage import BootstrapPaths, run

from .render_fixture import write_render_fixture

CFG = BootstrapParams(steps=25, batch_size=16, warmup_steps=3, lr=3e-3)
MODEL = ModelParams(embed_dim=32, image_size=64)


def _paths(tmp_path, **over) -> BootstrapPaths:
    return BootstrapPaths(
        renders_dir=tmp_path / "renders",
        features_dir=tmp_path / "features",
        out_dir=tmp_path / "models" / "base",
        metrics=tmp_path / "m.json",
        **over,
    )


def _features(tmp_path, model=MODEL) -> dict:
    return run_features(
        FeatureParams(batch_size=16, dtype="float32"),
        model=model,
        seed=0,
        progress=False,
        paths=FeaturePaths(
            renders_dir=tmp_path / "renders", out_dir=tmp_path / "features", stats=tmp_path / "features.json"
        ),
    )


def test_multi_positive_loss_on_known_inputs():
    img = torch.eye(3)[[0, 0, 1]]  # two images of class 0, one of class 1
    txt = torch.eye(3)[:2]
    pos = torch.tensor([0, 0, 1])
    loss = lit.multi_positive_clip_loss(img, txt, pos, torch.tensor(1.0))
    e = torch.e
    i2t = -torch.log(torch.tensor(e / (e + 1)))  # each image: own text 1, other 0
    # text 0 -> images [0, 0, 1] logits [1, 1, 0], target 0.5/0.5/0 ; text 1 -> [0, 0, 1], target image 2
    t2i_0 = -(0.5 * 2 * torch.log(torch.tensor(e / (2 * e + 1))))
    t2i_1 = -torch.log(torch.tensor(e / (e + 2)))
    torch.testing.assert_close(loss, (i2t + (t2i_0 + t2i_1) / 2) / 2)


def test_prompt_words_and_fallback():
    cfg, words = BootstrapParams(), Params().base.prompt_words
    assert lit.train_class({"label": "Plug", "name": "Wall plug"}, cfg, words) == "wall power outlet"
    assert lit.train_class({"label": None, "name": "Teddy  Bear"}, cfg, words) == "teddy bear"
    assert lit.eval_class({"label": None, "name": "Teddy bear"}, cfg, words) is None


def test_export_merges_text_lora_into_plain_model():
    clip, tok = lit.build_lit_model(CFG, MODEL, seed=0)
    with torch.no_grad():
        for n, p in clip.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    tokens = tok(["a 3D render of a chair."])
    expect = clip.encode_text(tokens)
    from ovt.model.embedded import create_embedded

    plain, _, _ = create_embedded(32, 64)
    state = lit.export_trained(clip)
    result = plain.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert sum("query" in k or "value" in k for k in state) == 12  # 6 MiniLM layers x (query, value)
    torch.testing.assert_close(plain.encode_text(tokens), expect, atol=1e-5, rtol=1e-4)
    # trimming the padding columns is exact for MiniLM's masked mean pooler
    trimmed = lit.trim_padding(tokens, plain.text.config.pad_token_id)
    assert trimmed.shape[1] < tokens.shape[1]
    torch.testing.assert_close(plain.encode_text(trimmed), plain.encode_text(tokens), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_bootstrap_stage_trains_from_the_feature_store_and_is_idempotent(tmp_path):
    counts = write_render_fixture(tmp_path / "renders", corrupt_one=True, labels_in_manifest=True)
    assert _features(tmp_path)["views_failed"] == 1
    out = tmp_path / "models" / "base"
    stats = run(CFG, model=MODEL, seed=7, paths=_paths(tmp_path))
    assert json.loads((tmp_path / "m.json").read_text())["loss_after"] == pytest.approx(stats["loss_after"])
    assert stats["loss_after"] < stats["loss_before"] - 0.05
    # only canonical views of training objects trained on (one is unreadable: no features -> failures.jsonl)
    assert stats["n_train_views"] == counts["train_canonical"] - 1
    assert stats["n_failures"] == 1
    assert json.loads((out / "failures.jsonl").read_text())["item"].endswith("_000")
    assert stats["zero_shot_after"]["heldout_canonical_n"] == 3 * 2
    meta = json.loads((out / "base.json").read_text())
    assert meta["embed_dim"] == 32 and meta["image_size"] == 64 and "text.proj.weight" in meta["trained_keys"]

    (tmp_path / "m.json").unlink()
    again = run(CFG, model=MODEL, seed=7, paths=_paths(tmp_path))
    assert again["skipped"] is True and (tmp_path / "m.json").is_file()  # the lost metrics copy is rewritten

    # re-splitting in the manifest (no new pixels) retrains on the new split from the same features
    manifest = tmp_path / "renders" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    moved = rows[-1]["asset_id"]  # a held-out object becomes a training object
    for r in rows:
        if r["asset_id"] == moved:
            r["split"] = "train"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    resplit = run(CFG, model=MODEL, seed=7, paths=_paths(tmp_path))
    assert "skipped" not in resplit and resplit["n_train_views"] == stats["n_train_views"] + 2

    # the base rebuilds from models/base/ with exactly the bootstrapped tensors
    base = build_base(MODEL, base_dir=out)
    saved = load_file(str(out / "base.safetensors"))
    torch.testing.assert_close(base.model.visual.head.proj.weight, saved["visual.head.proj.weight"])
    assert base.base_dir == out and base.embed_dim == 32
    # model.embed_dim is the one source of truth: a base of another width is refused, not silently used
    with pytest.raises(ValueError, match="rerun the bootstrap"):
        build_base(ModelParams(embed_dim=64, image_size=64), base_dir=out)


def test_validation_and_test_objects_never_train(tmp_path):
    rows = [
        {"key": f"k{i}", "shard": "shards/shard-00000.tar", "split": s, "canonical": True, "label": "chair"}
        for i, s in enumerate(["train", "validation", "test", "heldout"])
    ]
    kept = [r["split"] for r in rows if lit.wanted(r, CFG)]
    assert kept == ["train", "validation", "heldout"]  # test: never, not even for the report
    assert [r["split"] for r in rows if lit.wanted(r, CFG.model_copy(update={"eval_heldout": False}))] == ["train"]


def test_pretrained_open_clip_skips_with_a_marker(tmp_path):
    model = ModelParams(arch="ViT-B-32", pretrained="openai", lora={"placement": "qkv"})
    stats = run(CFG, model=model, seed=0, paths=_paths(tmp_path))
    assert stats["skipped"] is True and "pretrained" in stats["reason"]
    meta = json.loads((tmp_path / "models" / "base" / "base.json").read_text())
    assert meta["skipped"] is True and meta["arch"] == "ViT-B-32"
    assert json.loads((tmp_path / "m.json").read_text()) == {"skipped": True}
    assert not (tmp_path / "models" / "base" / "base.safetensors").exists()


def test_embed_dim_belongs_to_the_embedded_arch():
    with pytest.raises(ValueError, match="embed_dim"):
        ModelParams(arch="ViT-B-32", embed_dim=512, lora={"placement": "qkv"})
    assert ModelParams().embedded_dim == 256


def test_load_trained_parts_rejects_foreign_keys(tmp_path):
    from safetensors.torch import save_file

    save_file({"not.a.key": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(RuntimeError, match="not.a.key"):
        load_trained_parts(torch.nn.Linear(1, 1), tmp_path / "w.safetensors")


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        run(CFG, model=MODEL, seed=0, paths=_paths(tmp_path))
    write_render_fixture(tmp_path / "renders", labels_in_manifest=True)
    with pytest.raises(FileNotFoundError, match="features"):
        run(CFG, model=MODEL, seed=0, paths=_paths(tmp_path))


def test_training_is_reproducible_for_a_seed():
    g = torch.Generator().manual_seed(0)
    rows = [{"train_class": c} for c in ["chair", "lamp", "table", "chair"] * 4]
    data = lit.FeatureSet(torch.randn(len(rows), 1280, generator=g), rows)
    cfg = CFG.model_copy(update={"steps": 3, "batch_size": 8})
    runs = []
    for _ in range(2):
        clip, tok = lit.build_lit_model(cfg, MODEL, seed=3)
        lit.train(clip, tok, data, cfg, seed=3)
        runs.append(lit.export_trained(clip))
    assert sorted(runs[0]) == sorted(runs[1]), sorted(set(runs[0]) ^ set(runs[1]))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])

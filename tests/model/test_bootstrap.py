import json

import pytest
import torch
from safetensors.torch import load_file

from ovt.model import ModelParams, build_base
from ovt.model import bootstrap
from ovt.model.config import BootstrapParams
from ovt.model.factory import load_trained_parts
from ovt.model.stage import run

from .render_fixture import write_render_fixture

CFG = BootstrapParams(embed_dim=32, image_size=64, steps=25, batch_size=16, warmup_steps=3, lr=3e-3,
                      feature_batch_size=8)


def test_multi_positive_loss_on_known_inputs():
    img = torch.eye(3)[[0, 0, 1]]  # two images of class 0, one of class 1
    txt = torch.eye(3)[:2]
    pos = torch.tensor([0, 0, 1])
    loss = bootstrap.multi_positive_clip_loss(img, txt, pos, torch.tensor(1.0))
    e = torch.e
    i2t = -torch.log(torch.tensor(e / (e + 1)))  # each image: own text 1, other 0
    # text 0 -> images [0, 0, 1] logits [1, 1, 0], target 0.5/0.5/0 ; text 1 -> [0, 0, 1], target image 2
    t2i_0 = -(0.5 * 2 * torch.log(torch.tensor(e / (2 * e + 1))))
    t2i_1 = -torch.log(torch.tensor(e / (e + 2)))
    torch.testing.assert_close(loss, (i2t + (t2i_0 + t2i_1) / 2) / 2)


def test_prompt_words_and_fallback():
    cfg = BootstrapParams()
    assert bootstrap.train_class({"label": "Plug", "name": "Wall plug"}, cfg) == "wall power outlet"
    assert bootstrap.train_class({"label": None, "name": "Teddy  Bear"}, cfg) == "teddy bear"
    assert bootstrap.eval_class({"label": None, "name": "Teddy bear"}, cfg) is None


def test_export_merges_text_lora_into_plain_model():
    clip, tok, _ = bootstrap.build_lit_model(CFG, seed=0)
    with torch.no_grad():
        for n, p in clip.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    tokens = tok(["a 3D render of a chair."])
    expect = clip.encode_text(tokens)
    from ovt.model.embedded import create_embedded

    plain, _, _ = create_embedded(CFG.embed_dim, CFG.image_size)
    state = bootstrap.export_trained(clip)
    result = plain.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert sum("query" in k or "value" in k for k in state) == 12  # 6 MiniLM layers x (query, value)
    torch.testing.assert_close(plain.encode_text(tokens), expect, atol=1e-5, rtol=1e-4)
    # trimming the padding columns is exact for MiniLM's masked mean pooler
    trimmed = bootstrap.trim_padding(tokens, plain.text.config.pad_token_id)
    assert trimmed.shape[1] < tokens.shape[1]
    torch.testing.assert_close(plain.encode_text(trimmed), plain.encode_text(tokens), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_bootstrap_stage_improves_loss_and_is_idempotent(tmp_path):
    counts = write_render_fixture(tmp_path / "renders", corrupt_one=True, labels_in_manifest=True)
    out = tmp_path / "models" / "base"
    stats = run(CFG, seed=7, renders_dir=tmp_path / "renders", out_dir=out, metrics_path=tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["loss_after"] == pytest.approx(stats["loss_after"])
    assert stats["loss_after"] < stats["loss_before"] - 0.05
    # only canonical views of training objects trained on (one of them is an unreadable PNG -> failures.jsonl)
    assert stats["n_train_views"] == counts["train_canonical"] - 1
    assert stats["n_failures"] == 1
    assert json.loads((out / "failures.jsonl").read_text())["item"].endswith("_000")
    assert stats["zero_shot_after"]["heldout_canonical_n"] == 3 * 2
    meta = json.loads((out / "base.json").read_text())
    assert meta["embed_dim"] == 32 and "text.proj.weight" in meta["trained_keys"]

    again = run(CFG, seed=7, renders_dir=tmp_path / "renders", out_dir=out)
    assert again["skipped"] is True

    # re-splitting in the manifest (no new pixels) retrains on the new split and reuses the cached features
    cache = sorted((tmp_path / "models" / ".cache").rglob("*.safetensors"))
    stamp = [p.stat().st_mtime_ns for p in cache]
    manifest = tmp_path / "renders" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    moved = rows[-1]["asset_id"]  # a held-out object becomes a training object
    for r in rows:
        if r["asset_id"] == moved:
            r["split"] = "train"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    resplit = run(CFG, seed=7, renders_dir=tmp_path / "renders", out_dir=out)
    assert "skipped" not in resplit and resplit["n_train_views"] == stats["n_train_views"] + 2
    assert [p.stat().st_mtime_ns for p in cache] == stamp

    # the base rebuilds from models/base/ with exactly the bootstrapped tensors
    base = build_base(ModelParams(embed_dim=32, image_size=64), base_dir=out)
    saved = load_file(str(out / "base.safetensors"))
    torch.testing.assert_close(base.model.visual.head.proj.weight, saved["visual.head.proj.weight"])
    assert base.base_dir == out and base.embed_dim == 32


def test_load_trained_parts_rejects_foreign_keys(tmp_path):
    from safetensors.torch import save_file

    save_file({"not.a.key": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(RuntimeError, match="not.a.key"):
        load_trained_parts(torch.nn.Linear(1, 1), tmp_path / "w.safetensors")


def test_missing_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="shards"):
        run(CFG, seed=0, renders_dir=tmp_path / "nothing", out_dir=tmp_path / "out")


def test_training_is_reproducible_for_a_seed():
    g = torch.Generator().manual_seed(0)
    rows = [{"train_class": c} for c in ["chair", "lamp", "table", "chair"] * 4]
    data = bootstrap.FeatureSet(torch.randn(len(rows), 1280, generator=g), rows)
    cfg = CFG.model_copy(update={"steps": 3, "batch_size": 8})
    runs = []
    for _ in range(2):
        clip, tok, _ = bootstrap.build_lit_model(cfg, seed=3)
        bootstrap.train(clip, tok, data, cfg, seed=3)
        runs.append(bootstrap.export_trained(clip))
    assert sorted(runs[0]) == sorted(runs[1]), sorted(set(runs[0]) ^ set(runs[1]))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])

import json
import subprocess

import pytest
import yaml

from ovt.registry.config import RegisterParams
from ovt.registry.lineage import LineageError, collect, md5_file, resolve_out

from .conftest import write_metrics


def _collect(root, cfg=None):
    return collect(cfg or RegisterParams(), root=root, models_dir=root / "models", eval_dir=root / "data" / "eval")


def test_tags_carry_full_lineage(workspace):
    (workspace / "data" / "assets").mkdir(parents=True)
    (workspace / "data" / "assets" / "manifest.jsonl").write_text('{"asset_id": "x"}\n')
    subprocess.run(["git", "init", "-q"], cwd=workspace, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
        cwd=workspace,
        check=True,
    )
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True).stdout.strip()
    tags = _collect(workspace).tags()
    assert tags["ovt.git_commit"] == head
    # the manifest is inside the tracked data/assets folder: the folder's md5 plus the file's own md5
    assert tags["ovt.dvc.assets_manifest"] == "a" * 32 + ".dir"
    assert tags["ovt.dvc.assets_manifest.path"] == "data/assets"
    assert tags["ovt.dvc.assets_manifest.file_md5"] == md5_file(workspace / "data/assets/manifest.jsonl")
    assert tags["ovt.dvc.render_shards"] == "b" * 32 + ".dir"
    assert tags["ovt.dvc.captions"] == "c" * 32 + ".dir"
    assert tags["ovt.dvc.train_outputs"] == "d" * 32 + ".dir"
    assert tags["ovt.dvc.eval_metrics"] == "e" * 32
    assert json.loads(tags["ovt.base_model"]) == {"arch": "tiny-test"}
    # gate metrics are the bootstrap point estimates of the registered variant, not of the base
    assert float(tags["ovt.metric.worst_view"]) == 0.20
    assert float(tags["ovt.metric.canonical"]) == 0.70
    assert float(tags["ovt.metric.mean_acc"]) == 0.62
    assert float(tags["ovt.metric.worst_view_acc_lo"]) == 0.15 and float(tags["ovt.metric.n_objects"]) == 66
    assert len(tags["ovt.params_digest"]) == 64 and len(tags["ovt.lineage_digest"]) == 64
    assert all(isinstance(v, str) for v in tags.values())


def test_digest_is_stable_and_tracks_what_matters(workspace):
    d0 = _collect(workspace).digest
    assert _collect(workspace).digest == d0
    # registration settings do not change the model: same digest
    p = yaml.safe_load((workspace / "params.yaml").read_text())
    p["registry"] = {"variant": "ovt", "gate": {"worst_view_margin": 0.5}}
    (workspace / "params.yaml").write_text(yaml.safe_dump(p))
    assert _collect(workspace).digest == d0
    # a training param does
    p["train"]["lr"] = 0.5
    (workspace / "params.yaml").write_text(yaml.safe_dump(p))
    d1 = _collect(workspace).digest
    assert d1 != d0
    # so do the numbers and the model bytes; checkpoints do not
    write_metrics(workspace / "data" / "eval", worst_view_acc=0.3)
    d2 = _collect(workspace).digest
    assert d2 != d1
    (workspace / "models/ovt/checkpoints/step-2.pt").write_bytes(b"more resume state")
    assert _collect(workspace).digest == d2
    (workspace / "models/ovt/viformer.safetensors").write_bytes(b"changed")
    assert _collect(workspace).digest != d2


def test_eval_protocol_ignores_training_changes(workspace):
    e0 = _collect(workspace).eval_protocol
    p = yaml.safe_load((workspace / "params.yaml").read_text())
    p["train"]["lr"] = 0.5
    (workspace / "params.yaml").write_text(yaml.safe_dump(p))
    assert _collect(workspace).eval_protocol == e0
    p["evaluate"]["top_k"] = 1
    (workspace / "params.yaml").write_text(yaml.safe_dump(p))
    assert _collect(workspace).eval_protocol != e0


def test_missing_metric_names_key_and_what_exists(workspace):
    cfg = RegisterParams(metrics={"worst_view": "{variant}.nope"})
    with pytest.raises(LineageError, match=r"'ovt\.nope' not found: no 'nope' under ovt \(found: \['canonical_acc'"):
        _collect(workspace, cfg)


def test_null_gate_metric_is_an_error_and_bootstrap_dicts_unwrap(workspace):
    p = workspace / "data/eval/metrics.json"
    doc = json.loads(p.read_text())
    doc["ovt"]["worst_view_acc"] = None  # the evaluate stage writes NaN as null
    p.write_text(json.dumps(doc))
    with pytest.raises(LineageError, match="worst_view_acc must be a number, got None"):
        _collect(workspace)
    doc["ovt"]["worst_view_acc"] = {"value": 0.33, "lo": 0.2, "hi": 0.4}
    p.write_text(json.dumps(doc))
    assert _collect(workspace).metrics["worst_view"] == 0.33


def test_missing_inputs_are_named(workspace):
    (workspace / "data/eval/metrics.json").unlink()
    with pytest.raises(LineageError, match="metrics.json does not exist"):
        _collect(workspace)
    with pytest.raises(LineageError, match="models/other does not exist"):
        _collect(workspace, RegisterParams(variant="other"))


def test_resolve_out_prefers_deepest_parent():
    outs = {"data": "1", "data/renders": "2", "data/renders/shards/x.tar": "3"}
    assert resolve_out(outs, "data/renders/shards") == ("data/renders", "2")
    assert resolve_out(outs, "data/renders/shards/x.tar") == ("data/renders/shards/x.tar", "3")
    assert resolve_out(outs, "models/ovt") is None

"""Fixtures for the registry tests: a tiny trained-looking OVT variant, a workspace around it, a file MLflow store.

The model is the real `ovt.model.OVTModel` on the tiny-test base (`ovt.model.factory.build_tiny_test`) with randomised LoRA and
VIFormer weights, so the adapter actually changes the embeddings (peft initialises LoRA B to zero).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from ovt.registry.config import RegisterParams


def make_variant(out: Path, seed: int = 0) -> Path:
    from ovt.model import LoraParams, ModelParams, VIFormerParams, build_base, build_ovt_model

    cfg = ModelParams(
        arch="tiny-test", lora=LoraParams(placement="qkv", last_blocks=None), viformer=VIFormerParams(heads=4, ffn=64)
    )
    model = build_ovt_model(cfg, build_base(cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "viformer" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.save(out)
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "step-1.pt").write_bytes(b"resume state, not part of the served model")
    return out


@pytest.fixture(scope="session")
def variant_template(tmp_path_factory) -> Path:
    return make_variant(tmp_path_factory.mktemp("variant") / "ovt")


METRICS = {
    "worst_view_acc": 0.20,
    "off_canonical_acc": 0.60,
    "canonical_acc": 0.70,
    "mean_acc": 0.62,
    "canonical_gap": 0.10,
}


def write_metrics(eval_dir: Path, variant: str = "ovt", **values: float) -> None:
    """metrics.json in the evaluate stage's layout (ovt/evaluate/report.py: metrics_doc)."""
    m = {**METRICS, **values}
    doc: dict = {variant: {}, "base": {k: v - 0.1 for k, v in METRICS.items()}, "n_objects": 66}
    for k, v in m.items():
        doc[variant].update({k: v, f"{k}_lo": round(v - 0.05, 6), f"{k}_hi": round(v + 0.05, 6)})
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "metrics.json").write_text(json.dumps(doc))


DVC_LOCK = {
    "schema": "2.0",
    "stages": {
        "acquire": {
            "cmd": "python -m stages.acquire",
            "outs": [{"path": "data/assets", "hash": "md5", "md5": "a" * 32 + ".dir", "size": 1}],
        },
        "render": {
            "cmd": "python -m stages.render",
            "outs": [{"path": "data/renders", "hash": "md5", "md5": "b" * 32 + ".dir", "size": 1}],
        },
        "caption": {
            "cmd": "python -m stages.caption",
            "outs": [{"path": "data/captions", "hash": "md5", "md5": "c" * 32 + ".dir", "size": 1}],
        },
        "train": {
            "cmd": "python -m stages.train",
            "outs": [{"path": "models/ovt", "hash": "md5", "md5": "d" * 32 + ".dir", "size": 1}],
        },
        "evaluate": {
            "cmd": "python -m stages.evaluate",
            "outs": [{"path": "data/eval/metrics.json", "hash": "md5", "md5": "e" * 32, "size": 1}],
        },
    },
}


@pytest.fixture
def workspace(tmp_path, variant_template) -> Path:
    """A repo-shaped folder: models/ovt, data/eval/metrics.json, params.yaml, dvc.lock."""
    root = tmp_path / "repo"
    shutil.copytree(variant_template, root / "models" / "ovt")
    write_metrics(root / "data" / "eval")
    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {"base": {"seed": 1}, "train": {"lr": 0.001}, "evaluate": {"top_k": 5}, "registry": {"variant": "ovt"}}
        )
    )
    (root / "dvc.lock").write_text(yaml.safe_dump(DVC_LOCK))
    return root


@pytest.fixture(scope="session")
def _sqlite_store(tmp_path_factory) -> str:
    # One DB per session: creating the schema costs ~8 s; tests stay independent through unique model names.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def mlflow_store(_sqlite_store, tmp_path, monkeypatch):
    """A private sqlite tracking/registry store with a file artifact root (no server)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", _sqlite_store)
    monkeypatch.chdir(tmp_path)  # the default ./mlruns artifact root lands in this test's tmp
    mlflow.set_tracking_uri(_sqlite_store)
    mlflow.set_registry_uri(_sqlite_store)
    yield _sqlite_store
    # Both globals: a registry URI left behind sends later tests' in-process registrations to this sqlite store
    # while their subprocesses (environment restored by tests/conftest.py) talk to a server.
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def cfg(request) -> RegisterParams:
    name = "ovt-" + uuid.uuid4().hex[:10]
    # Fast retries: tests must not sleep through production back-off.
    return RegisterParams(
        model_name=name,
        experiment=name,
        retry={"attempts": 2, "initial_delay_s": 0.05, "max_delay_s": 0.1, "request_timeout_s": 20},
    )

"""The pyfunc model: in-process input handling, and load-and-predict in a fresh process via models:/<name>@champion."""

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovt.registry.inputs import to_rows
from ovt.registry.predict import load_ovt_model, predict_rows
from ovt.registry.promote import promote
from ovt.registry.register import register

REPO = Path(__file__).resolve().parents[2]


def _png(seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(variant_template):
    return load_ovt_model(variant_template)


def test_predict_embeddings_probs_and_mixed_rows(model, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_png(1))
    b64 = base64.b64encode(_png(1)).decode()
    rows = to_rows({"image": [str(path), "data:image/png;base64," + b64, None], "text": ["a chair", None, "a bed"]})
    out = predict_rows(model, rows, {"class_names": ["chair", "table", "bed"]}, "a 3D render of a {}.")
    assert out[0]["image_embedding"] == pytest.approx(out[1]["image_embedding"], abs=1e-6)  # path == base64
    for r in out[:2]:
        assert np.linalg.norm(r["image_embedding"]) == pytest.approx(1.0, abs=1e-5)
        assert sum(r["probs"]) == pytest.approx(1.0, abs=1e-5) and r["label"] in ("chair", "table", "bed")
    assert out[1]["text_embedding"] is None and out[2]["image_embedding"] is None and "probs" not in out[2]
    assert np.linalg.norm(out[2]["text_embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_input_spellings_agree():
    import pandas as pd

    want = [{"text": "a", "class_names": ["x", "y"]}, {"text": "b", "class_names": ["x", "y"]}]
    assert to_rows({"text": ["a", "b"], "class_names": ["x", "y"]}) == want  # class_names shared by all rows
    assert to_rows(want) == want
    # MLflow's schema enforcement hands a dict of columns over as one row of lists
    one = pd.DataFrame({"text": [["a", "b"]], "class_names": [["x", "y"]]})
    assert [r["text"] for r in to_rows(one)] == ["a", "b"]
    with pytest.raises(ValueError, match="different lengths"):
        to_rows({"text": ["a", "b"], "image": ["c"]})


def test_per_row_class_names_column(model):
    b64 = base64.b64encode(_png(2)).decode()
    out = predict_rows(model, to_rows([{"image": b64, "class_names": json.dumps(["a", "b"])}]), {}, "{}")
    assert len(out[0]["probs"]) == 2


@pytest.mark.parametrize(
    "rows, needle",
    [
        ([{"image": "not-base64!!"}], "row 0: column 'image'"),
        ([{"text": "ok"}, {"image": base64.b64encode(b"not an image").decode()}], "row 1: column 'image'"),
        ([{"colour": "red"}], "unknown input column"),
        ([{"image": None, "text": None}], "lacks both"),
    ],
)
def test_bad_input_is_named(model, rows, needle):
    with pytest.raises(ValueError, match=needle):
        predict_rows(model, to_rows(rows), {}, "{}")


FRESH = textwrap.dedent("""
    import base64, json, sys
    import mlflow, pandas as pd
    mlflow.set_tracking_uri(sys.argv[1])
    m = mlflow.pyfunc.load_model(sys.argv[2])
    imgs = json.loads(open(sys.argv[3]).read())
    out = m.predict(pd.DataFrame({"image": imgs, "text": ["a 3D render of a chair.", "a bed"]}),
                    params={"class_names": ["chair", "bed"]})
    cols = m.predict({"text": ["a 3D render of a chair.", "a bed"]})  # dict of columns: the other spelling
    import ovt
    print("RESULT" + json.dumps({"img": out["image_embedding"].tolist(), "txt": out["text_embedding"].tolist(),
                                "probs": out["probs"].tolist(), "txt2": cols["text_embedding"].tolist(),
                                "ovt": ovt.__file__}))
""")


@pytest.mark.slow
def test_champion_loads_in_fresh_process_with_training_side_embeddings(mlflow_store, workspace, cfg, tmp_path):
    reg = register(cfg, root=workspace, models_dir=workspace / "models", eval_dir=workspace / "data" / "eval")
    assert promote(cfg).champion_after == reg.version
    imgs = [base64.b64encode(_png(s)).decode() for s in (3, 4)]
    (tmp_path / "imgs.json").write_text(json.dumps(imgs))
    # No PYTHONPATH to this checkout, pickle refused: the package must come from the model's own code path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, mlflow_store, f"models:/{cfg.model_name}@champion", str(tmp_path / "imgs.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert "/code/ovt/" in got["ovt"] and not got["ovt"].startswith(str(REPO)), got["ovt"]

    # the training side: the saved variant loaded by ovt.model, fed through its own preprocess
    ref = load_ovt_model(workspace / "models" / "ovt")
    with torch.no_grad():
        x = torch.stack([ref.preprocess(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in imgs])
        img = ref.encode_image(x).numpy()
        txt = ref.encode_text(["a 3D render of a chair.", "a bed"]).numpy()
    np.testing.assert_allclose(np.array(got["img"]), img, atol=1e-5)
    np.testing.assert_allclose(np.array(got["txt"]), txt, atol=1e-5)
    np.testing.assert_allclose(np.array(got["txt2"]), txt, atol=1e-5)
    assert all(abs(sum(p) - 1) < 1e-5 for p in got["probs"])
    # and the adapter is really in there: the bare tiny base embeds the same images differently
    from ovt.model import ModelParams, build_base

    bare = build_base(ModelParams(arch="tiny-test")).model
    with torch.no_grad():
        base_img = torch.nn.functional.normalize(bare.encode_image(x), dim=-1).numpy()
    assert np.abs(base_img - img).max() > 1e-3


def test_registered_artifact_holds_no_pickle_and_installable_requirements(mlflow_store, workspace, cfg, tmp_path):
    import mlflow
    import yaml

    from ovt.registry.packaging import PICKLE_SUFFIXES

    reg = register(cfg, root=workspace, models_dir=workspace / "models", eval_dir=workspace / "data" / "eval")
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{cfg.model_name}/{reg.version}", dst_path=str(tmp_path / "dl"))
    )
    files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    assert not [f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES], files
    assert not [f for f in files if "checkpoints/" in f or "__pycache__" in f]
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["model_code_path"].endswith("served_model.py") and "python_model" not in flavor
    assert {
        "artifacts/model/viformer.safetensors",
        "artifacts/model/model.json",
        "artifacts/serving.json",
        "artifacts/model/adapter/adapter_model.safetensors",
        "served_model.py",
    } <= set(files)
    assert "code/ovt/model/ovt_model.py" in files  # the package travels with the model
    reqs = (local / "requirements.txt").read_text()
    assert "ovt" not in reqs.replace("open_clip", "")  # no ovt-pipeline==0.1.0: nothing to install from nowhere
    assert "torch==" in reqs and "safetensors==" in reqs


def test_packaging_refuses_pickle_capable_files(variant_template, tmp_path):
    import shutil

    from ovt.registry.packaging import stage_artifacts

    bad = tmp_path / "variant"
    shutil.copytree(variant_template, bad)
    (bad / "extra.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match=r"extra\.pt: a \.pt file can hold a pickle"):
        stage_artifacts(bad, None, tmp_path / "staging", "{}")

"""Time the registry round trip on the tiny-test OVT model: register (log pyfunc + version + alias), a no-op
re-register, the promotion gate, and `mlflow.pyfunc.load_model("models:/<name>@champion")` + predict in a fresh
process. Store: local sqlite + file artifacts, or a running MLflow server with `--tracking-uri`.

    python benchmarks/registry_roundtrip.py [--tracking-uri http://127.0.0.1:5000]

Prints the numbers and writes benchmarks/results/registry_roundtrip.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    import mlflow
    import yaml

    from benchmarks.common import write_result
    from ovt.registry.config import RegisterParams
    from ovt.registry.promote import promote
    from ovt.registry.register import register
    from tests.registry.conftest import DVC_LOCK, make_variant, write_metrics

    tmp = Path(tempfile.mkdtemp(prefix="ovt-bench-reg-"))
    os.chdir(tmp)
    uri = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    root = tmp / "repo"
    make_variant(root / "models" / "ovt")
    write_metrics(root / "data" / "eval")
    (root / "dvc.lock").write_text(yaml.safe_dump(DVC_LOCK))
    (root / "params.yaml").write_text("train: {lr: 0.001}\n")
    name = "bench-" + uuid.uuid4().hex[:8]
    cfg = RegisterParams(model_name=name, experiment=name)

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, round(time.perf_counter() - t0, 2)

    kw = dict(root=root, models_dir=root / "models", eval_dir=root / "data" / "eval")
    if not args.tracking_uri:  # the sqlite schema is created on first use: keep it out of the register timing
        _, t_store = timed(lambda: mlflow.MlflowClient().search_registered_models())
    else:
        t_store = 0.0
    reg, t_reg = timed(lambda: register(cfg, **kw))
    again, t_noop = timed(lambda: register(cfg, **kw))
    dec, t_gate = timed(lambda: promote(cfg))
    code = (
        "import mlflow,sys,time; t=time.perf_counter(); m=mlflow.pyfunc.load_model(sys.argv[1]); "
        "t1=time.perf_counter(); m.predict({'text':['a chair']}); print('T', t1-t, time.perf_counter()-t1)"
    )
    proc, t_fresh = timed(
        lambda: subprocess.run(
            [sys.executable, "-c", code, f"models:/{name}@champion"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=600,
        )
    )
    load_s, predict_s = (float(x) for x in proc.stdout.split("T ", 1)[1].split()) if "T " in proc.stdout else (-1, -1)
    res = {
        "store": "server" if args.tracking_uri else "sqlite+file",
        "model": "tiny-test OVT (LoRA qkv + VIFormer)",
        "store_init_s": t_store,
        "register_s": t_reg,
        "register_noop_s": t_noop,
        "gate_s": t_gate,
        "fresh_process_total_s": t_fresh,
        "fresh_load_model_s": round(load_s, 2),
        "fresh_predict_s": round(predict_s, 3),
        "created": [reg.created, again.created],
        "gate": dec.action,
    }
    write_result(REPO / "benchmarks" / "results" / "registry_roundtrip.json", res, load_before=load_before)


if __name__ == "__main__":
    main()

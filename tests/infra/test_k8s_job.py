"""The GPU training Job as Kubernetes would run it: the rendered template mounts the services secret and runs the
entry script; the entry script points DVC at the environment's remote and pulls exactly the train stage's inputs as
dvc.yaml names them now (read here at test time), before the flow run (node 0) or torchrun (other nodes)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "production" / "k8s-gpu-base-job-template.json"
ENTRY = REPO / "infra" / "k8s" / "train-entry.sh"


def _train_inputs_from_dvc_yaml() -> list[str]:
    """Independent reading of dvc.yaml: train's deps that some other stage writes (or that lie under one)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = set()
    for name, s in stages.items():
        if name == "train":
            continue
        for key in ("outs", "metrics", "plots"):
            for e in s.get(key) or []:
                outs.update(e if isinstance(e, dict) else [e])
    deps = stages["train"]["deps"]
    return [d for d in deps if any(d == o or d.startswith(o.rstrip("/") + "/") for o in outs)]


def _render(**values) -> dict:
    from prefect.utilities.templating import apply_values

    tmpl = json.loads(TEMPLATE.read_text())
    vals = {k: v.get("default") for k, v in tmpl["variables"]["properties"].items() if "default" in v}
    vals.update(name="ovt-train", command="prefect flow-run execute", **values)
    return apply_values(tmpl["job_configuration"], vals)["job_manifest"]


def test_template_mounts_the_secret_and_runs_the_entry_script():
    job = _render(nnodes=2, gpus_per_node=8)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "ovt-services"}}]
    assert c["command"][:2] == ["/bin/bash", "infra/k8s/train-entry.sh"]
    assert "--stage=train" in c["command"] and c["command"][-1] == "--"
    assert (REPO / c["command"][1]).is_file()
    assert (
        _render(services_secret="prod-s3")["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"][
            "name"
        ]
        == "prod-s3"
    )


def _dockerfile_tags() -> dict[str, str]:
    """VARIANT -> image tag, from the build commands in infra/docker/Dockerfile's header."""
    tags = {}
    for line in (REPO / "infra" / "docker" / "Dockerfile").read_text().splitlines():
        m = re.search(r"docker build .*--build-arg VARIANT=(\w+)\s+-t (\S+)", line)
        if m:
            tags[m[1]] = m[2]
    assert set(tags) == {"cpu", "cuda"}, tags
    return tags


def test_gpu_template_defaults_to_the_cuda_image():
    tags = _dockerfile_tags()
    c = _render()["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == tags["cuda"] != tags["cpu"]
    deployments = yaml.safe_load((REPO / "infra" / "production" / "prefect-cluster.yaml").read_text())["deployments"]
    gpu = [d for d in deployments if d["work_pool"]["name"] == "ovt-k8s-gpu"]
    assert gpu and all(d["work_pool"]["job_variables"].get("image", tags["cuda"]) == tags["cuda"] for d in gpu)


def _fake_tools(tmp_path: Path) -> Path:
    """`python -m dvc ...` and `torchrun` echo their command line; any other python call is the real interpreter
    (so stage_inputs.py really reads dvc.yaml)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text(
        f'#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "dvc" ]; then shift 2; '
        f'echo "dvc $*"; exit 0; fi\nexec {sys.executable} "$@"\n'
    )
    (bin_ / "torchrun").write_text('#!/bin/sh\necho "torchrun $*"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    return bin_


def _entry(tmp_path, rank: int, **env) -> subprocess.CompletedProcess:
    base = {
        "PATH": f"{_fake_tools(tmp_path)}:/usr/bin:/bin",
        "HOSTNAME": f"ovt-train-abc12-{rank}",
        "JOB_COMPLETION_INDEX": str(rank),
        "MLFLOW_TRACKING_URI": "https://mlflow.example.org",
        "HOME": str(tmp_path),
    }
    return subprocess.run(
        [
            "bash",
            str(ENTRY),
            "--nnodes=2",
            "--gpus-per-node=8",
            "--master-port=29500",
            "--subdomain=ovt-train",
            "--train-module=stages.train",
            "--stage=train",
            "--",
            "echo",
            "flow-run",
        ],
        env=base | env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("rank", [0, 1])
def test_every_node_pulls_trains_real_inputs_then_runs(tmp_path, rank):
    inputs = _train_inputs_from_dvc_yaml()
    assert inputs, "train has no inputs produced by other stages?"
    out = _entry(tmp_path, rank, MLFLOW_S3_ENDPOINT_URL="http://s3.ovt:8333", DVC_BUCKET="ovt-dvc")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "dvc remote modify --local local url s3://ovt-dvc/store" in lines
    assert "dvc remote modify --local local endpointurl http://s3.ovt:8333" in lines
    pulls = [ln for ln in lines if ln.startswith("dvc pull")]
    assert pulls == ["dvc pull " + " ".join(inputs)]  # exactly train's inputs, in dvc.yaml's order
    assert lines.index(pulls[0]) < len(lines) - 1  # ... before the run itself
    if rank == 0:
        assert lines[-1] == "flow-run"
    else:
        assert lines[-1] == (
            "torchrun --nnodes=2 --nproc_per_node=8 --node_rank=1 "
            "--master_addr=ovt-train-abc12-0.ovt-train --master_port=29500 -m stages.train"
        )


def test_entry_refuses_without_mlflow_and_follows_aws_endpoint(tmp_path):
    env = {"PATH": f"{_fake_tools(tmp_path)}:/usr/bin:/bin", "JOB_COMPLETION_INDEX": "0", "HOME": str(tmp_path)}
    out = subprocess.run(
        ["bash", str(ENTRY), "--", "true"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "MLFLOW_TRACKING_URI" in out.stderr
    out = _entry(
        tmp_path / "b", 0, AWS_ENDPOINT_URL="https://minio.example.org", MLFLOW_S3_ENDPOINT_URL="http://ignored:1"
    )
    assert "dvc remote modify --local local endpointurl https://minio.example.org" in out.stdout.splitlines()


def test_stage_inputs_names_a_missing_stage():
    out = subprocess.run(
        [sys.executable, "infra/k8s/stage_inputs.py", "no-such-stage"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert out.returncode == 1 and "no stage 'no-such-stage' in dvc.yaml" in out.stderr

"""infra/production: parse each file and check it with the tools' own schemas where they exist offline.

No container engine or cluster here, so: compose is parsed and its required keys checked; the Kubernetes base job
template is validated by Prefect's own work-pool schema and rendered with Prefect's own templating; the cluster
prefect.yaml's job variables must exist in the template; every ${VAR} compose uses is documented in the env example.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

PROD = Path(__file__).resolve().parents[2] / "infra" / "production"
REPO = PROD.parents[1]


def _yaml(name):
    return yaml.safe_load((PROD / name).read_text())


def _k8s_default_template() -> dict:
    import prefect

    path = Path(prefect.__file__).parent / "server/api/collections_data/views/aggregate-worker-metadata.json"
    meta = json.loads(path.read_text())
    return meta["prefect-kubernetes"]["kubernetes"]["default_base_job_configuration"]


def test_compose_has_the_service_trio_with_health_and_pinned_images():
    doc = _yaml("compose.yaml")
    svc = doc["services"]
    assert {"s3", "mlflow", "prefect", "postgres"} <= set(svc)
    for name in ("s3", "mlflow", "prefect", "postgres"):
        s = svc[name]
        assert s.get("image") and ":" in s["image"] and not s["image"].endswith(":latest"), name
        assert "healthcheck" in s and s["healthcheck"]["test"], name
    mlflow_cmd = " ".join(svc["mlflow"]["command"])
    for flag in ("--backend-store-uri=postgresql://", "--artifacts-destination=s3://", "--host=0.0.0.0"):
        assert flag in mlflow_cmd
    assert (PROD / svc["mlflow"]["build"]["dockerfile"]).is_file()
    assert "prefect" in svc["prefect"]["command"] and "4200" in svc["prefect"]["command"]
    assert svc["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(doc["volumes"]) >= {"pgdata", "s3data"}


def test_every_compose_variable_is_documented_in_the_env_example():
    text = (PROD / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", (PROD / "production.env.example").read_text(), re.M))
    assert used and used <= documented, used - documented


def test_gpu_job_template_passes_prefects_work_pool_validation():
    from prefect.client.schemas.actions import WorkPoolCreate

    tmpl = json.loads((PROD / "k8s-gpu-base-job-template.json").read_text())
    WorkPoolCreate(name="ovt-k8s-gpu", type="kubernetes", base_job_template=tmpl)  # raises on a bad template
    default = _k8s_default_template()
    assert set(tmpl) == set(default)
    # every variable the Prefect Kubernetes worker knows is still there (we only add)
    assert set(default["variables"]["properties"]) <= set(tmpl["variables"]["properties"])
    # and every {{ placeholder }} in the job configuration is a declared variable
    placeholders = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(tmpl["job_configuration"])))
    assert placeholders <= set(tmpl["variables"]["properties"]), placeholders - set(tmpl["variables"]["properties"])


@pytest.mark.parametrize("nnodes, gpus", [(1, 1), (2, 8)])
def test_gpu_job_template_renders_a_torchrun_indexed_job(nnodes, gpus):
    from prefect.utilities.templating import apply_values

    tmpl = json.loads((PROD / "k8s-gpu-base-job-template.json").read_text())
    values = {k: v.get("default") for k, v in tmpl["variables"]["properties"].items() if "default" in v}
    values.update(nnodes=nnodes, gpus_per_node=gpus, command="prefect flow-run execute", name="ovt-train")
    job = apply_values(tmpl["job_configuration"], values)["job_manifest"]
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == nnodes and job["spec"]["parallelism"] == nnodes
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert f"--nnodes={nnodes}" in c["command"] and f"--gpus-per-node={gpus}" in c["command"]
    assert all(isinstance(a, str) for a in c["command"])  # Kubernetes rejects non-string args
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert pod["subdomain"] == "ovt-train"
    assert (REPO / c["command"][1]).is_file()  # the entry script the command runs ships in the repo
    svc = _yaml("k8s-train-headless-service.yaml")
    assert svc["spec"]["clusterIP"] == "None" and svc["metadata"]["name"] == pod["subdomain"]
    assert svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()


def test_cluster_deployments_resolve_and_use_declared_job_variables():
    from prefect.flows import load_flow_from_entrypoint

    doc = _yaml("prefect-cluster.yaml")
    assert "git_clone" not in json.dumps(doc.get("pull"))
    gpu_vars = set(json.loads((PROD / "k8s-gpu-base-job-template.json").read_text())["variables"]["properties"])
    cpu_vars = set(_k8s_default_template()["variables"]["properties"])
    for dep in doc["deployments"]:
        path, func = dep["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(str(REPO / path) + ":" + func)
        assert set(dep.get("parameters") or {}) <= set(flow.parameters.properties), dep["name"]
        allowed = gpu_vars if dep["work_pool"]["name"] == "ovt-k8s-gpu" else cpu_vars
        assert set(dep["work_pool"].get("job_variables") or {}) <= allowed, dep["name"]
    gpu = next(d for d in doc["deployments"] if d["name"] == "train-gpu")
    assert gpu["work_pool"]["job_variables"]["nnodes"] >= 2 and gpu["parameters"]["stages"] == ["train"]


def test_dask_cluster_manifest_shape():
    doc = _yaml("dask-cluster.yaml")
    assert doc["kind"] == "DaskCluster" and doc["apiVersion"].startswith("kubernetes.dask.org/")
    ports = {p["port"] for p in doc["spec"]["scheduler"]["service"]["ports"]}
    assert 8786 in ports


def test_readme_documents_every_file():
    readme = (PROD / "README.md").read_text()
    for f in PROD.iterdir():
        if f.name != "README.md" and not f.name.startswith("."):
            assert f.name in readme, f.name


def _caddy_blocks(text: str) -> dict[str, str]:
    """Top-level `address { body }` blocks of a Caddyfile (comments stripped, nested braces kept in the body).
    `{$VAR}` / `{$VAR:default}` placeholders are text, not blocks."""
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    text = re.sub(r"\{\$[A-Z0-9_]+(:[^{}]*)?\}", lambda m: m.group(0).replace("{", "\0").replace("}", "\1"), text)
    blocks, depth, head, body = {}, 0, "", []
    for ch in text:
        if ch == "{":
            depth += 1
            if depth > 1:
                body.append(ch)
        elif ch == "}":
            depth -= 1
            if depth == 0:
                blocks[head.strip()] = "".join(body)
                head, body = "", []
            else:
                body.append(ch)
        elif depth:
            body.append(ch)
        else:
            head += ch
    assert depth == 0, "unbalanced braces"
    restore = lambda t: t.replace("\0", "{").replace("\1", "}")
    return {restore(k): restore(v) for k, v in blocks.items()}


def test_production_publishes_only_the_auth_proxy():
    doc = _yaml("compose.yaml")
    svc = doc["services"]
    publishing = {name for name, s in svc.items() if s.get("ports") or s.get("network_mode") == "host"}
    assert publishing == {"proxy"}
    proxy = svc["proxy"]
    assert re.fullmatch(r"caddy:\d+\.\d+\.\d+(-alpine)?", proxy["image"])  # the official image, pinned
    # no credentials, no start: the compose file refuses to come up without them
    env_text = json.dumps(proxy["environment"])
    assert "${PROXY_USER:?" in env_text and "${PROXY_PASSWORD_HASH:?" in env_text
    mount = next(v for v in proxy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    caddyfile = (PROD / mount.split(":")[0]).resolve()
    blocks = _caddy_blocks(caddyfile.read_text())

    snippet = blocks["(auth)"]
    assert re.search(r"basic_auth\s*\{\s*\{\$PROXY_USER\}\s+\{\$PROXY_PASSWORD_HASH\}\s*\}", snippet)
    upstreams = {}
    for address, body in blocks.items():
        for target in re.findall(r"reverse_proxy\s+(\S+)", body):
            upstreams[target] = (address, body)
    assert set(upstreams) == {"mlflow:5000", "prefect:4200", "s3:8333"}
    for target in ("mlflow:5000", "prefect:4200"):  # no authentication of their own: the proxy's is required
        address, body = upstreams[target]
        assert re.search(r"^\s*import auth\s*$", body, re.MULTILINE), f"{address} -> {target} without basic auth"
    # S3 keeps its own authentication (signed requests); a basic-auth header would replace the signature
    assert "import auth" not in upstreams["s3:8333"][1]
    assert "-disableHttp" in svc["s3"]["command"]
    for key in ("WEED_JWT_SIGNING_KEY", "WEED_JWT_FILER_SIGNING_KEY"):
        assert svc["s3"]["environment"][key].startswith(f"${{{key}:?")
    # every published port is one the Caddyfile serves (or ACME/HTTPS)
    served = {int(m) for a in blocks for m in re.findall(r":(\d+)\}", a)} | {80, 443}
    assert {int(p.split(":")[-1]) for p in proxy["ports"]} <= served

"""Lineage of a registered model version: where its data, code, params and numbers came from.

Everything here is a pure function of files in the repo (dvc.lock, params.yaml, the model folder, metrics.json) and
the git commit, so the same workspace always yields the same tags and the same `lineage_digest`, which is what makes
registration idempotent.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ovt.io import sha256_file, stable_digest
from ovt.registry.config import PARAMS_BLOCK, RegisterParams
from ovt.train.config import SEEDS_DIR

TAG_PREFIX = "ovt."
# MLflow caps model-version tag values (5000 chars in the SQL store); long JSON (the base description) is cut.
MAX_TAG_VALUE = 5000
# Files under a variant folder that are not part of the served model (training state, resume points).
_MODEL_EXCLUDE_DIRS = {"checkpoints", SEEDS_DIR}  # resume state; the seed replicates (models of their own)


class LineageError(ValueError):
    """An input the lineage needs is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Lineage:
    variant: str
    git_commit: str
    git_dirty: bool
    dvc_outs: dict[str, dict[str, str]]  # tag name -> {"path": dvc out path, "md5": hash[, "file_md5"]}
    params_digest: str
    model_digest: str
    base_model: dict[str, Any]
    metrics: dict[str, float]  # gate + extra metric name -> value
    eval_protocol: str
    digest: str = field(default="")

    def tags(self) -> dict[str, str]:
        """Flat string tags for the MLflow model version (and the run)."""
        t = {
            "ovt.variant": self.variant,
            "ovt.git_commit": self.git_commit,
            "ovt.git_dirty": str(self.git_dirty).lower(),
            "ovt.params_digest": self.params_digest,
            "ovt.model_digest": self.model_digest,
            "ovt.eval_protocol": self.eval_protocol,
            "ovt.lineage_digest": self.digest,
            "ovt.base_model": _cap(json.dumps(self.base_model, sort_keys=True)),
        }
        for name, out in self.dvc_outs.items():
            t[f"ovt.dvc.{name}"] = out["md5"]
            t[f"ovt.dvc.{name}.path"] = out["path"]
            if "file_md5" in out:
                t[f"ovt.dvc.{name}.file_md5"] = out["file_md5"]
        for name, value in self.metrics.items():
            t[f"ovt.metric.{name}"] = repr(float(value))
        return t


def _cap(s: str) -> str:
    return s if len(s) <= MAX_TAG_VALUE else s[: MAX_TAG_VALUE - 1] + "…"


def git_state(root: Path) -> tuple[str, bool]:
    """(commit sha or "unknown", dirty?) — a repo without commits or without git is not an error for lineage."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
        if sha.returncode != 0:
            return "unknown", True
        st = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return sha.stdout.strip(), bool(st.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", True


def read_dvc_outs(lock_path: Path) -> dict[str, str]:
    """{out path: md5} over every stage of dvc.lock (foreach stages included)."""
    if not lock_path.exists():
        return {}
    try:
        doc = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LineageError(f"{lock_path}: not valid YAML: {exc}") from None
    outs: dict[str, str] = {}
    for stage_name, stage in (doc.get("stages") or {}).items():
        for out in (stage or {}).get("outs") or []:
            md5 = out.get("md5") or out.get("etag") or out.get("checksum")
            if not out.get("path") or not md5:
                raise LineageError(f"{lock_path}: stage {stage_name!r} has an out without path/md5: {out}")
            outs[str(out["path"]).rstrip("/")] = str(md5)
    return outs


def resolve_out(outs: dict[str, str], path: str) -> tuple[str, str] | None:
    """The DVC out for `path`: itself, or else the deepest out folder that contains it."""
    path = path.rstrip("/")
    if path in outs:
        return path, outs[path]
    parents = [p for p in outs if path.startswith(p + "/")]
    if not parents:
        return None
    best = max(parents, key=len)
    return best, outs[best]


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def folder_digest(folder: Path) -> str:
    """sha256 over (relative path, file sha256) of the served model files; independent of mtimes and order."""
    if not folder.is_dir():
        raise LineageError(f"model folder {folder} does not exist (did the train stage run?)")
    rows = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not (set(rel.parts[:-1]) & _MODEL_EXCLUDE_DIRS) and not rel.name.startswith("."):
            rows.append([rel.as_posix(), sha256_file(p)])
    if not rows:
        raise LineageError(f"model folder {folder} holds no files")
    return stable_digest(rows)


def get_dotted(doc: Any, dotted: str, source: str) -> Any:
    cur = doc
    walked: list[str] = []
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            have = sorted(cur) if isinstance(cur, dict) else type(cur).__name__
            at = ".".join(walked) or "<top level>"
            raise LineageError(f"{source}: key {dotted!r} not found: no {part!r} under {at} (found: {have})")
        cur = cur[part]
        walked.append(part)
    return cur


def _unwrap(value: Any) -> Any:
    """Bootstrapped metrics are stored as {value, lo, hi}: the gate uses the point estimate."""
    return value["value"] if isinstance(value, dict) and "value" in value else value


def read_metrics(metrics_path: Path, cfg: RegisterParams) -> dict[str, float]:
    """Gate metrics (required) and extra metrics (when present) for `cfg.variant` from metrics.json."""
    if not metrics_path.exists():
        raise LineageError(f"{metrics_path} does not exist (did the evaluate stage run?)")
    try:
        doc = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LineageError(f"{metrics_path}: not valid JSON: {exc}") from None
    out: dict[str, float] = {}
    gate = {
        "worst_view": cfg.metrics.worst_view,
        "off_canonical": cfg.metrics.off_canonical,
        "canonical": cfg.metrics.canonical,
    }
    for name, key in gate.items():
        value = _unwrap(get_dotted(doc, key.format(variant=cfg.variant), str(metrics_path)))
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise LineageError(f"{metrics_path}: {key} must be a number, got {value!r}")
        out[name] = float(value)
    for key in cfg.metrics.extra:
        k = key.format(variant=cfg.variant)
        try:
            value = _unwrap(get_dotted(doc, k, str(metrics_path)))
        except LineageError:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[k.split(".")[-1]] = float(value)
    return out


def read_params(params_path: Path) -> dict[str, Any]:
    if not params_path.exists():
        return {}
    try:
        return yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LineageError(f"{params_path}: not valid YAML: {exc}") from None


def read_base_model(model_dir: Path) -> dict[str, Any]:
    """The base-model description from the variant's model.json (the whole file when it has no `base` key)."""
    p = model_dir / "model.json"
    if not p.exists():
        raise LineageError(f"{p} does not exist: the variant folder is not a saved OVT model")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LineageError(f"{p}: not valid JSON: {exc}") from None
    return doc.get("base", doc) if isinstance(doc, dict) else {"model_json": doc}


def collect(cfg: RegisterParams, *, root: Path, models_dir: Path, eval_dir: Path) -> Lineage:
    """Gather the lineage of `models_dir/<variant>` evaluated in `eval_dir/metrics.json` inside repo `root`."""
    model_dir = models_dir / cfg.variant
    commit, dirty = git_state(root)
    outs = read_dvc_outs(root / "dvc.lock")
    dvc_outs: dict[str, dict[str, str]] = {}
    for name, path in cfg.lineage_paths.items():
        rel = path.format(variant=cfg.variant)
        hit = resolve_out(outs, rel)
        if hit is not None:
            dvc_outs[name] = {"path": hit[0], "md5": hit[1]}
            # A file inside a tracked folder (the asset manifest in data/assets/): also pin the file itself, with
            # the md5 DVC would give it, so the tag identifies it without opening the folder's .dir listing.
            if hit[0] != rel.rstrip("/") and (root / rel).is_file():
                dvc_outs[name]["file_md5"] = md5_file(root / rel)
    params = read_params(root / "params.yaml")
    # The registry block only says how to register/promote: it does not change the model, so it is left out.
    params_digest = stable_digest({k: v for k, v in params.items() if k != PARAMS_BLOCK})
    protocol = stable_digest(
        {
            "params": {b: params.get(b) for b in cfg.eval_protocol_blocks},
            "data": {k: dvc_outs.get(k, {}).get("md5") for k in cfg.eval_protocol_paths},
        }
    )
    lin = Lineage(
        variant=cfg.variant,
        git_commit=commit,
        git_dirty=dirty,
        dvc_outs=dvc_outs,
        params_digest=params_digest,
        model_digest=folder_digest(model_dir),
        base_model=read_base_model(model_dir),
        metrics=read_metrics(eval_dir / "metrics.json", cfg),
        eval_protocol=protocol,
    )
    # The digest is what "the same registration" means: same model bytes, same numbers, same data and params.
    # The git commit is deliberately left out: a commit that changes no output must not register a new version.
    digest = stable_digest(
        {
            "variant": lin.variant,
            "model": lin.model_digest,
            "metrics": lin.metrics,
            "params": lin.params_digest,
            "dvc": lin.dvc_outs,
            "protocol": lin.eval_protocol,
        }
    )
    return Lineage(**{**lin.__dict__, "digest": digest})

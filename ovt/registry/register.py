"""Register the trained variant as a new MLflow model version with full lineage, and point `challenger` at it.

Order of operations, chosen so that a crash or an outage at any point leaves a state the next run detects:

1. collect the lineage (local files only; fails before touching MLflow when an input is missing);
2. look for a version of the registered model carrying the same `ovt.lineage_digest`:
   - state `complete`  -> nothing to do (idempotent);
   - state `registering` and READY -> resume: set the alias, mark complete;
   - state `registering` and not READY (failed/pending registration) -> delete it and register afresh;
3. start a run, log the model from code (artifacts go to S3 through MLflow: the step an S3 outage breaks; no version
   exists yet, so a failure here leaves only a FAILED run and an unregistered logged model);
4. create the version *with all lineage tags in the same request* and `ovt.state=registering`;
5. set the alias; 6. set `ovt.state=complete` last.

So "a version without its tags" cannot exist, and "a version without its alias" is exactly `ovt.state=registering`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ovt.registry.config import RegisterParams
from ovt.registry.lineage import Lineage, collect
from ovt.registry.retry import RegistryError, is_transient, warn_if_nested_retries, with_retries

log = logging.getLogger(__name__)

STATE_TAG = "ovt.state"
REGISTERING, COMPLETE = "registering", "complete"
DIGEST_TAG = "ovt.lineage_digest"


@dataclass
class Registration:
    name: str
    version: str
    run_id: str | None
    aliases: list[str]
    lineage_digest: str
    created: bool  # a new version was created (or a half-done one finished) by this call
    model_uri: str
    tracking_uri: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("tags")
        return d


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def versions_with_digest(client: Any, name: str, digest: str, cfg: RegisterParams) -> list[Any]:
    """All versions of `name` tagged with `digest`, newest first (filtered client-side: tag filters on model
    versions are not supported by every MLflow store)."""
    vs = with_retries(
        lambda: client.search_model_versions(f"name = '{name}'", max_results=10_000), cfg.retry, "search model versions"
    )
    hits = [v for v in vs if (v.tags or {}).get(DIGEST_TAG) == digest]
    return sorted(hits, key=lambda v: int(v.version), reverse=True)


def ensure_registered_model(client: Any, cfg: RegisterParams) -> None:
    from mlflow.exceptions import MlflowException

    def _create() -> None:
        try:
            client.create_registered_model(
                cfg.model_name,
                tags={"ovt.project": "omniview-tuning"},
                description="Omniview-Tuning adapters (LoRA + VIFormer) over a frozen CLIP base; see version tags "
                "for lineage and ovt.gate.* tags for promotion decisions.",
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    with_retries(_create, cfg.retry, "create registered model")


def _wait_ready(client: Any, name: str, version: str, cfg: RegisterParams, timeout_s: float = 120) -> Any:
    t0 = time.monotonic()
    while True:
        mv = with_retries(lambda: client.get_model_version(name, version), cfg.retry, "get model version")
        if mv.status == "READY":
            return mv
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() - t0 > timeout_s:
            raise RegistryError(
                f"model version {name} v{version} did not become READY (status {mv.status}: {mv.status_message})"
            )
        time.sleep(0.5)


def _finish(client: Any, cfg: RegisterParams, mv: Any) -> None:
    """Steps 5-6: alias, then the completion mark (each idempotent, so a resumed run may repeat them)."""
    with_retries(
        lambda: client.set_registered_model_alias(cfg.model_name, cfg.challenger_alias, mv.version),
        cfg.retry,
        f"set alias {cfg.challenger_alias}",
    )
    with_retries(
        lambda: client.set_model_version_tag(cfg.model_name, mv.version, STATE_TAG, COMPLETE),
        cfg.retry,
        "mark version complete",
    )


def _result(client: Any, cfg: RegisterParams, mv: Any, created: bool) -> Registration:
    import mlflow

    mv = with_retries(lambda: client.get_model_version(cfg.model_name, mv.version), cfg.retry, "get model version")
    return Registration(
        name=cfg.model_name,
        version=str(mv.version),
        run_id=mv.run_id,
        aliases=sorted(getattr(mv, "aliases", []) or []),
        lineage_digest=mv.tags.get(DIGEST_TAG, ""),
        created=created,
        model_uri=f"models:/{cfg.model_name}/{mv.version}",
        tracking_uri=mlflow.get_tracking_uri(),
        tags=dict(mv.tags),
    )


def register(
    cfg: RegisterParams,
    *,
    root: Path,
    models_dir: Path,
    eval_dir: Path,
    base_dir: Path | None = None,
    tracking_uri: str | None = None,
) -> Registration:
    """Register `models_dir/<variant>` (idempotent; resumes a half-done registration) on the server at
    `tracking_uri` (default: MLflow's configured one, MLFLOW_TRACKING_URI)."""
    lineage = collect(cfg, root=root, models_dir=models_dir, eval_dir=eval_dir)
    if base_dir is None and (models_dir / "base").is_dir():
        base_dir = models_dir / "base"
    warn_if_nested_retries(cfg.retry)
    try:
        with _tracking(tracking_uri):
            return _register(cfg, lineage, models_dir / cfg.variant, base_dir)
    except RegistryError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise RegistryError(_outage_message(exc)) from exc
        raise


@contextmanager
def _tracking(uri: str | None) -> Iterator[None]:
    """MLflow's fluent API (runs, model logging) on `uri` for the duration, then back to what it was.

    MLflow keeps the URI as module state (and mirrors it into MLFLOW_TRACKING_URI for its own subprocesses); setting
    the previous value back undoes both, so the caller's process is as it was."""
    if not uri:
        yield
        return
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before = utils._tracking_uri  # None unless set: get_tracking_uri() would return a resolved default instead
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None is accepted: it unsets


def _outage_message(exc: BaseException) -> str:
    import mlflow

    return (
        f"MLflow registration failed after retries ({type(exc).__name__}: {str(exc)[:500]}). The tracking "
        f"server ({mlflow.get_tracking_uri()}) or its S3 artifact store is unreachable or failing: check "
        f"`ovt status` / the MLflow server log. No model version was left half-registered: a rerun resumes."
    )


def _register(cfg: RegisterParams, lineage: Lineage, model_dir: Path, base_dir: Path | None) -> Registration:
    import mlflow

    client = _client()
    ensure_registered_model(client, cfg)
    for mv in versions_with_digest(client, cfg.model_name, lineage.digest, cfg):
        state = (mv.tags or {}).get(STATE_TAG)
        if state == COMPLETE:
            log.info(
                "%s v%s already holds lineage %s: nothing to register", cfg.model_name, mv.version, lineage.digest[:12]
            )
            return _result(client, cfg, mv, created=False)
        if mv.status == "READY":
            log.warning("resuming half-done registration of %s v%s", cfg.model_name, mv.version)
            _finish(client, cfg, mv)
            return _result(client, cfg, mv, created=True)
        log.warning("deleting failed registration %s v%s (status %s)", cfg.model_name, mv.version, mv.status)
        with_retries(
            lambda: client.delete_model_version(cfg.model_name, mv.version), cfg.retry, "delete failed version"
        )

    tags = lineage.tags()
    with_retries(lambda: mlflow.set_experiment(cfg.experiment), cfg.retry, "set experiment")
    with mlflow.start_run(run_name=f"register-{cfg.variant}-{lineage.digest[:8]}", tags=tags) as run:
        with_retries(
            lambda: mlflow.log_metrics({f"heldout.{k}": v for k, v in lineage.metrics.items()}),
            cfg.retry,
            "log metrics",
        )
        # The first artifact upload: with S3 down this is where the outage shows (the run is then marked FAILED).
        with_retries(
            lambda: mlflow.log_dict({"lineage": {**lineage.__dict__}, "tags": tags}, "lineage.json"),
            cfg.retry,
            "log lineage.json",
        )
        with tempfile.TemporaryDirectory(prefix="ovt-register-") as tmp:
            info = with_retries(
                lambda: _log(model_dir, base_dir, cfg, Path(tmp), tags), cfg.retry, "log pyfunc model (artifact upload)"
            )
        mv = with_retries(
            lambda: mlflow.register_model(
                info.model_uri, cfg.model_name, await_registration_for=0, tags={**tags, STATE_TAG: REGISTERING}
            ),
            cfg.retry,
            "create model version",
        )
        mv = _wait_ready(client, cfg.model_name, mv.version, cfg)
        _finish(client, cfg, mv)
        log.info("registered %s v%s (run %s) as %s", cfg.model_name, mv.version, run.info.run_id, cfg.challenger_alias)
    return _result(client, cfg, mv, created=True)


def _log(model_dir: Path, base_dir: Path | None, cfg: RegisterParams, tmp: Path, tags: dict[str, str]) -> Any:
    from ovt.registry.packaging import log_model

    staging = Path(tempfile.mkdtemp(prefix="stage-", dir=tmp))  # fresh per attempt: copytree needs a new target
    return log_model(
        model_dir, base_dir, name=cfg.artifact_name, prompt_template=cfg.prompt_template, staging=staging, tags=tags
    )

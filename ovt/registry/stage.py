"""The register stage (last DVC stage): log + register the trained variant, write data/register/registered.json.

The MLflow server comes from MLFLOW_TRACKING_URI (set by `ovt.services.client_env()` / the pipeline flow). The
promotion gate is not part of the stage: it changes only registry aliases (no DVC output), so it runs after
`dvc push` as its own flow step (`ovt promote`, flows/promote.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ovt.io import atomic_write_json
from ovt.registry.config import RegisterParams
from ovt.registry.register import register

log = logging.getLogger(__name__)

OUT_FILE = "registered.json"


def run(cfg: RegisterParams, *, seed: int, models_dir: Path, eval_dir: Path, out_dir: Path,
        root: Path | None = None) -> dict:
    """Register `models_dir/<variant>`; idempotent (same lineage -> same version, nothing new). `seed` is unused
    (registration is deterministic) but kept for the uniform stage signature."""
    del seed
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise RuntimeError("MLFLOW_TRACKING_URI is not set: start the services (`ovt up`) and run the stage through "
                           "`ovt run` / the pipeline flow, or export the variables from `ovt services env`")
    root = Path(root) if root is not None else Path.cwd()
    reg = register(cfg, root=root, models_dir=Path(models_dir), eval_dir=Path(eval_dir))
    record = reg.to_json()
    atomic_write_json(Path(out_dir) / OUT_FILE, record)
    log.info("%s %s v%s (aliases %s)", "registered" if reg.created else "already registered", reg.name,
             reg.version, reg.aliases)
    return {"name": reg.name, "version": reg.version, "created": reg.created, "aliases": reg.aliases,
            "lineage_digest": reg.lineage_digest}

"""torchrun-able entry: `torchrun --standalone --nproc_per_node=N -m ovt.train.ddp --params params.yaml`.

Also runs as a plain process (`python -m ovt.train.ddp`), which is rank 0 of 1. Reads the `train` and `model`
blocks (and `base.seed`) of params.yaml, joins the process group torchrun describes and calls the stage.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ovt.train.distributed import destroy, init_from_env
from ovt.train.stage import run


def load_blocks(path: Path):
    """Validate the whole params.yaml (a typo anywhere fails here, named), return (train, model, seed)."""
    from ovt.config import load_params

    params = load_params(path)
    return params.train, params.model, params.base.seed


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--renders", type=Path, default=Path("data/renders"))
    ap.add_argument("--captions", type=Path, default=Path("data/captions"))
    ap.add_argument("--base", type=Path, default=Path("models/base"))
    ap.add_argument(
        "--features",
        type=Path,
        default=Path("data/features"),
        help="the features stage's output ('none' computes the frozen prefix here)",
    )
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--no-resume", dest="resume", action="store_false", help="ignore existing checkpoints")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, model_cfg, seed = load_blocks(args.params)
    ctx = init_from_env()
    try:
        return run(
            cfg,
            seed=seed,
            renders_dir=args.renders,
            captions_dir=args.captions,
            base_dir=args.base,
            out_dir=args.out,
            model_cfg=model_cfg,
            resume=args.resume,
            ctx=ctx,
            features_dir=None if str(args.features) == "none" else args.features,
        )
    finally:
        destroy(ctx)


if __name__ == "__main__":
    main()

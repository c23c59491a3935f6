"""Train stage: for each listed variant, train (or, for `zeroshot`, just package) the OVT model into
`models/<variant>/`, idempotently and resumably.

    from ovt.train import TrainPaths, run, run_distributed
    run(params.train, seed=..., paths=TrainPaths(), model_cfg=params.model)              # one process
    run_distributed(params.train, seed=..., paths=TrainPaths(), model_cfg=params.model)  # a torchrun rank (the DVC stage)

Layout:
  models/<variant>/            adapter/, viformer.safetensors, model.json (the model); checkpoints/ (resume);
                               history.json (every logged step and mining pass); train.json (completion marker)
  models/train_metrics/        metrics.json (one summary row per variant), failures.jsonl
  models/train_metrics/<variant>/  dvclive folder: metrics.json + plots/metrics/<metric>.tsv (dvc plots/exp show)
  models/text_cache/<key>/     the caption bank (`ovt.train.captions`): each caption of the run encoded once,
                               rank-sharded, read by every variant and by later runs with the same text tower

Completion marker: `train.json` holds the variant's content key (inputs, params, seed, implementation version),
written last. A rerun with the same key does nothing but rewrite the variant's dvclive folder from its saved
history (DVC deletes non-persistent outputs before a run, and a kill can strike between variants); a changed key
retrains (resuming from a checkpoint only when the checkpoint was written under the same key).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ovt.io import atomic_write_json, sha256_file, stable_digest
from ovt.train.captions import TEXT_CACHE, CaptionSource
from ovt.train.config import TrainParams, replicate_dir, replicate_name
from ovt.train.data import load_table
from ovt.train.distributed import DistContext, barrier, destroy, init_from_env
from ovt.train.loop import Trainer
from ovt.train.rows import merge_sorted_texts
from ovt.train.tracking import HISTORY, write_live

if TYPE_CHECKING:  # the model package is heavy; training only needs its interface for type checking
    from ovt.model.ovt_model import OVTModel

log = logging.getLogger(__name__)

IMPL_VERSION = "ovt-train/2"
BASE_JSON = "base.json"  # the bootstrap stage's record in models/base (ovt.model.factory.BASE_JSON)


@dataclass(frozen=True)
class TrainPaths:
    """The paths dvc.yaml declares for the train stage."""

    renders_dir: Path = Path("data/renders")
    captions_dir: Path = Path("data/captions")
    base_dir: Path | None = Path("models/base")  # None: the model block's base as built, no bootstrapped weights
    features_dir: Path | None = Path("data/features")  # None: the frozen prefix is computed here
    out_dir: Path = Path("models")
    metrics_dir: Path | None = None  # None: out_dir/train_metrics


def base_digest(base_dir: Path | None) -> str | None:
    """What the bootstrapped base's weights depend on: its weight files and the content key in base.json.

    base.json also holds the bootstrap's wall-time stats, which differ between identical runs; they are left out,
    as are metrics.json and failures.jsonl, so a rerun that only took a different time keeps every variant's key.
    """
    if base_dir is None or not Path(base_dir).exists():
        return None
    root = Path(base_dir)
    weights = [[p.name, sha256_file(p)] for p in sorted(root.glob("*.safetensors")) if p.is_file()]
    meta_path = root / BASE_JSON
    meta: Any = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text()).get("key")
        except (ValueError, AttributeError):  # not a JSON object: the file itself is what there is to key on
            meta = sha256_file(meta_path)
    return stable_digest({"key": meta, "weights": weights})


def input_digest(
    renders_dir: Path | None, captions_dir: Path | None, base_dir: Path | None, cfg: TrainParams, store: Any = None
) -> dict[str, str | None]:
    """Digests of everything upstream that changes the training pairs or the starting weights (None: absent)."""
    out: dict[str, str | None] = {}

    def files(root: Path | None, patterns: list[str]) -> str | None:
        if root is None or not Path(root).exists():
            return None
        found = sorted(p for pat in patterns for p in Path(root).glob(pat) if p.is_file())
        return stable_digest([[str(p.relative_to(root)), sha256_file(p)] for p in found])

    out["renders"] = files(renders_dir, ["manifest.jsonl", "shards/*.json"])
    out["captions"] = files(captions_dir, ["shards/*.jsonl", "shards/*.json"])
    out["base"] = base_digest(base_dir)
    if store is not None:  # the frozen-tower outputs the variants train on
        out["features"] = stable_digest(
            [store.folder.name] + [json.loads(p.read_text())["key"] for p in sorted(store.folder.glob("shard-*.json"))]
        )
    for name in ("mvcap_metadata", "twod_path"):
        p = getattr(cfg.data, name)
        if p is not None and Path(p).is_file():
            out[name] = sha256_file(p)
    return out


def variant_key(cfg: TrainParams, variant: str, seed: int, inputs: dict, model_cfg: Any) -> str:
    # tracking, the variant list and the replicate count do not change a variant's weights; everything else does
    train = cfg.model_dump(mode="json", exclude={"tracking", "variants", "seeds", "seed_variants"})
    if variant == "contrastive":  # no L_VC: mining and the alignment loss cannot change its weights
        train.pop("mining")
        train["loss"] = {k: v for k, v in train["loss"].items() if k == "multi_positive"}
    elif variant == "zeroshot":  # no training at all: only the model block and the seed matter
        train, inputs = {}, {"base": inputs.get("base")}
    model = model_cfg.model_dump(mode="json") if hasattr(model_cfg, "model_dump") else model_cfg
    return stable_digest(
        {"impl": IMPL_VERSION, "variant": variant, "seed": seed, "train": train, "model": model, "inputs": inputs}
    )


def text_key(inputs: dict, model_cfg: Any) -> str:
    """What the frozen text tower's output depends on: the bootstrapped base (its text LoRA) and the model block."""
    model = model_cfg.model_dump(mode="json") if hasattr(model_cfg, "model_dump") else model_cfg
    return stable_digest({"impl": IMPL_VERSION, "base": inputs.get("base"), "model": model})[:16]


def prune_text_cache(root: Path, keep: str) -> None:
    """Drop the caption banks (and pre-bank cache files) of other text towers beside `root/keep`."""
    for other in root.glob("*"):
        if other.name == keep:
            continue
        if other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
        else:
            other.unlink(missing_ok=True)


def _default_builder(model_cfg: Any, base_dir: Path | None) -> Callable[[], OVTModel]:
    from ovt.model import build_base, build_ovt_model

    def build():
        return build_ovt_model(model_cfg, build_base(model_cfg, base_dir))

    return build


def run(
    cfg: TrainParams,
    *,
    seed: int,
    paths: TrainPaths = TrainPaths(),
    model_cfg: Any = None,
    build_model: Callable[[], OVTModel] | None = None,
    resume: bool = True,
    ctx: DistContext | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train every variant in `cfg.variants` into `paths.out_dir/<variant>/`; returns per-variant stats.

    `build_model()` must return a fresh OVT model (ovt.model interface); by default it is built from `model_cfg`
    and the bootstrapped base in `paths.base_dir`. Metrics go to `paths.metrics_dir` (default
    `out_dir/train_metrics`). `paths.features_dir` (the features stage's output) supplies the frozen prefix of every
    render view; without it the prefix is computed here. `ctx` is this process's rank (default: rank 0 of 1).
    """
    renders_dir, captions_dir, out_dir = Path(paths.renders_dir), Path(paths.captions_dir), Path(paths.out_dir)
    base_dir = Path(paths.base_dir) if paths.base_dir is not None else None
    features_dir = Path(paths.features_dir) if paths.features_dir is not None else None
    ctx = ctx or DistContext()
    metrics_dir = Path(paths.metrics_dir) if paths.metrics_dir is not None else out_dir / "train_metrics"
    if build_model is None:
        if model_cfg is None:
            raise ValueError("train stage: pass model_cfg (the params.yaml model block) or build_model")
        build_model = _default_builder(model_cfg, base_dir)
    store = None
    if features_dir is not None:
        from ovt.features import open_store

        if model_cfg is None:
            raise ValueError("train stage: features_dir needs model_cfg (it names the frozen tower configuration)")
        store = open_store(features_dir, model_cfg)
    inputs = input_digest(renders_dir, captions_dir, base_dir, cfg, store)
    failures = metrics_dir / "failures.jsonl"
    hv = cfg.heldout_viewpoints
    hv_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"elevation_bands": hv.train_bands})})
    variants = list(cfg.variants) + ([f"{v}_hv" for v in hv.variants] if hv.enabled else [])
    # (name, variant, seed, folder): each variant with the stage's seed, then its seed replicates (if any)
    todo = [
        (replicate_name(variant, k), variant, s, replicate_dir(out_dir, variant, k))
        for variant in variants
        for k, s in enumerate(cfg.replicate_seeds(variant, seed))
    ]
    # One table per view selection (all views / the held-out-viewpoint bands); the frozen-tower outputs inside
    # `shared` are common to both, so an image or caption is encoded once per run whichever variants use it.
    tables: dict[bool, Any] = {}

    def table(is_hv: bool) -> Any:
        if is_hv not in tables:
            # built in a child process; its columns are memory-mapped files, shared with the DataLoader workers
            tables[is_hv] = load_table(hv_cfg.data if is_hv else cfg.data, renders_dir, captions_dir)
        return tables[is_hv]

    trained = sorted({v.endswith("_hv") for _, v, _, _ in todo if v.removesuffix("_hv") != "zeroshot"})

    def run_captions() -> Iterator[str]:  # every table the run's variants train on, skipped or not: a stable set
        return merge_sorted_texts(*(table(is_hv).rows.sorted_texts() for is_hv in trained))

    # caption embeddings: one on-disk bank per text tower, built (rank-sharded) by the first variant that trains
    # and read by all; it persists across runs (a sweep point that changes only train params encodes nothing)
    text_dir = out_dir / TEXT_CACHE / text_key(inputs, model_cfg)
    captions = CaptionSource(text_dir, text_dir.name, run_captions)
    stores: dict = {"prefix_store": {}, "captions": captions}  # frozen-tower outputs, shared by the variants
    shareds: dict[bool, dict] = {False: dict(stores), True: dict(stores)}
    stats: dict[str, Any] = {}
    for name, variant, vseed, dest in todo:
        is_hv = variant.endswith("_hv")
        kind = variant.removesuffix("_hv")
        vcfg = hv_cfg if is_hv else cfg
        key = variant_key(vcfg, kind, vseed, inputs, model_cfg)
        live = name == variant  # dvclive folders (dvc plots) follow the registered seed only
        marker = dest / "train.json"
        if marker.exists() and (kind == "zeroshot" or (dest / HISTORY).is_file()):
            done = json.loads(marker.read_text())
            if done.get("key") == key:
                log.info("%s: up to date (key %s), skipping", name, key[:12])
                stats[name] = {**done.get("stats", {}), "skipped": True}
                if ctx.is_main and kind != "zeroshot" and live:
                    write_live(metrics_dir / variant, json.loads((dest / HISTORY).read_text()), done.get("stats"))
                continue
        torch.manual_seed(vseed)  # every variant of one seed starts from identical adapter initialisations
        model = build_model()
        t0 = time.perf_counter()
        if kind == "zeroshot":
            vstats: dict[str, Any] = {"variant": name, "steps": 0}
        else:
            trainer = Trainer(
                model,
                table(is_hv).copy(),
                vcfg,
                variant=kind,
                seed=vseed,
                work_dir=dest,
                ctx=ctx,
                key=key,
                failures=failures,
                on_step=on_step,
                shared_cache=shareds[is_hv],
                store=store,
            )
            try:
                vstats = trainer.fit(resume=resume)
                history = trainer.tracker.history()
                trainer.tracker.summary(vstats)
            finally:
                trainer.tracker.close()
        vstats["wall_s"] = round(time.perf_counter() - t0, 2)
        if ctx.is_main:
            # zeroshot = the base: adapters present but switched off (LoRA delta and VIFormer residual × 0)
            record = {
                "key": key,
                "variant": variant,
                "seed": vseed,
                "adapter_scale": 0.0 if kind == "zeroshot" else cfg.wise_alpha,
                "lambda": cfg.loss.lam if kind == "ovt" else 0.0,
                "impl": IMPL_VERSION,
                "elevation_bands": vcfg.data.elevation_bands,
            }
            # model.save writes adapter/, viformer.safetensors and model.json atomically, leaving checkpoints/
            model.to("cpu").save(dest, extra={"train": record})
            if kind != "zeroshot":
                atomic_write_json(dest / HISTORY, history)
                if live:
                    write_live(metrics_dir / variant, history, vstats)
            atomic_write_json(marker, {**record, "inputs": inputs, "stats": vstats})  # last: the commit
        barrier(ctx)
        stats[name] = vstats
    if ctx.is_main:
        if captions.built:
            prune_text_cache(text_dir.parent, keep=text_dir.name)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        flat = {
            v: {
                k: s.get(k)
                for k in (
                    "steps",
                    "final_loss",
                    "final_loss_itc",
                    "final_loss_vc",
                    "mining_s",
                    "train_s",
                    "mining_share",
                    "samples_per_s",
                    "wall_s",
                    "skipped",
                )
                if k in s
            }
            for v, s in stats.items()
        }
        atomic_write_json(metrics_dir / "metrics.json", flat)
    return stats


def run_distributed(
    cfg: TrainParams,
    *,
    seed: int,
    paths: TrainPaths = TrainPaths(),
    model_cfg: Any = None,
    build_model: Callable[[], OVTModel] | None = None,
    resume: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """`run` as one rank of the process group torchrun describes (a plain process is rank 0 of 1): join the group,
    run, leave it."""
    ctx = init_from_env()
    try:
        return run(
            cfg,
            seed=seed,
            paths=paths,
            model_cfg=model_cfg,
            build_model=build_model,
            resume=resume,
            ctx=ctx,
            on_step=on_step,
        )
    finally:
        destroy(ctx)

"""Typed parameters of the train stage (the `train:` block of params.yaml).

Defaults are the embedded default (CPU, minutes on 2 cores). Every divergence from the official OVT code
is an explicit switch; the comment on each says which value the official code uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ovt.params_base import StrictModel

Variant = Literal["ovt", "contrastive", "zeroshot"]

# The seed replicates' layout, read by train (writes them), evaluate (pools them) and the registry (leaves them out):
# replicate k of a variant is the variant trained with seed base.seed + k; k = 0 is the variant itself.
SEEDS_DIR = "seeds"


def replicate_name(variant: str, k: int) -> str:
    # no "@", "." or "-": the name becomes part of metric paths and MLflow metric names
    return variant if k == 0 else f"{variant}_seed{k}"


def replicate_dir(models_dir: Path, variant: str, k: int) -> Path:
    """models/<variant>/ for k = 0, models/<variant>/seeds/<k>/ for a replicate."""
    return models_dir / variant if k == 0 else models_dir / variant / SEEDS_DIR / str(k)


class MiningParams(StrictModel):
    """The max step: kNN-weighted viewpoint centres and the K hardest views per object."""

    mode: Literal["full_pass", "reuse"] = "full_pass"  # official: full_pass (an extra pass over the data each epoch)
    knn: int = Field(5, ge=1)  # neighbours for the centre weights (official 5)
    hard_k: int = Field(5, ge=1)  # K hardest views per object (official 5)
    weight: Literal["inv_cos", "inv_dist"] = "inv_cos"  # official: inv_cos (up-weights outlier views)
    renormalise_centre: bool = False  # official: False (centre only used through cosines anyway)
    batch_size: int = Field(256, ge=1)  # embedding batch of the full pass (bounds accelerator memory)


class LossParams(StrictModel):
    lam: float = Field(1.0, ge=0.0)  # λ of L_VC (official 1.0); the `contrastive` variant forces 0
    margin: float = 0.3  # m (official --margin 0.3; the loss class default is 0.5)
    triplet_negative: bool = False  # official: False (relu(d_pos - d_neg + m) is commented out)
    multi_positive: bool = False  # official: False (targets arange(B) even when pairs share an object/label)


class OptimParams(StrictModel):
    # The paper's 5e-5 is tuned for 35k steps; the embedded default runs a few hundred, so the LR is raised
    # (3e-4 suits a few hundred steps of head tuning; MHA-LoRA is known to diverge near 1e-3).
    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = Field(0.05, ge=0)
    wd_on_all: bool = False  # official: True (decay on gains, biases and logit_scale too)
    warmup_steps: int = Field(20, ge=0)  # official: 0
    # step_cosine: cosine from lr to the floor over the whole run, per optimiser step (open_clip's schedule).
    # epoch_cosine (official): torch CosineAnnealingLR(T_max=t_max_epochs) stepped once per epoch.
    schedule: Literal["step_cosine", "epoch_cosine"] = "step_cosine"
    t_max_epochs: int = Field(30, ge=1)  # epoch_cosine's T_max (official 30)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine floor as a fraction of lr
    grad_clip: float | None = 1.0
    logit_scale_max: float | None = None  # official: None (unclamped); open_clip clamps ln(100)


class DataParams(StrictModel):
    """Where the pairs come from and how a batch is mixed."""

    mvcap_batch: int = Field(48, ge=1)  # paper 512
    twod_batch: int = Field(16, ge=0)  # paper 256 (ImageNet captions); 0 disables mixing
    # auto: `canonical` when training from render shards, `none` from an MVCap metadata.json (which has no
    # canonical views or class names to prompt with). The paper mixes ImageNet captions: csv or webdataset.
    twod_source: Literal["auto", "canonical", "csv", "webdataset", "none"] = "auto"
    twod_path: Path | None = None  # csv: columns filepath,title; webdataset: a .tar (or a folder of .tar)
    twod_prompt: str = "a 3D render of a {}."  # canonical source: class-name prompt
    mvcap_metadata: Path | None = None  # an MVCap metadata.json instead of render shards + captions
    mvcap_image_root: Path | None = None  # root the metadata's relative paths resolve against
    elevation_bands: list[tuple[float, float]] | None = None  # keep views with lo <= elevation < hi; None = all
    object_aware_sampler: bool = False  # official: False (global shuffle); True groups views of one object
    views_per_object: int = Field(4, ge=1)  # object-aware sampler: consecutive views of one object per batch
    # Images per forward pass when caching the frozen prefix. On 2 CPU cores small batches are ~3x faster per
    # image than large ones (activations stay in cache): 9 ms/img at 4, 14 at 8, 31 at 256 (EfficientNet-Lite0).
    encode_batch: int = Field(8, ge=1)
    cache_prefix: bool = True  # CPU speed: cache image_prefix activations once, train the tail only
    # Largest in-memory prefix tensor (every table row, float32, per rank) the trainer may build; above it, or
    # when the model adapts from the stem (a cached prefix would save no compute), it runs the full forward. 16
    # GiB is the float32 copy of what the features stage's default `max_prefix_gib` (8, float16) admits.
    max_prefix_gib: float = Field(16.0, gt=0)
    # Image-decoding worker processes per rank, for the full forward and the prefix encoding pass. None: none
    # without CUDA (on a CPU run the cores are the training compute), up to 8 with it. 0: decode in the training
    # process.
    num_workers: int | None = Field(None, ge=0)
    augment: bool = False  # only without the cache: official RandomRotation(90)+RandomAffine(translate 0.1)
    max_views_per_object: int | None = None  # subsample (deterministically) for quick runs
    # False (as MVCap does): every training object with captions, unlabelled ones too. True: only objects that
    # carry an evaluation label.
    labelled_only: bool = False

    @model_validator(mode="after")
    def _check(self) -> DataParams:
        if self.augment and self.cache_prefix:
            raise ValueError("data.augment needs data.cache_prefix: false (cached activations are un-augmented)")
        if self.twod_source in ("csv", "webdataset") and self.twod_path is None:
            raise ValueError(f"data.twod_source={self.twod_source!r} needs data.twod_path")
        if self.twod_source == "canonical" and self.twod_batch > 0 and self.mvcap_metadata is not None:
            raise ValueError(
                "data.twod_source='canonical' needs render shards (their canonical views and class names), "
                "not data.mvcap_metadata; use auto or none (no 2D mixing), or csv/webdataset with data.twod_path"
            )
        for lo, hi in self.elevation_bands or []:
            if not lo < hi:
                raise ValueError(f"data.elevation_bands: band ({lo}, {hi}) is empty (need lo < hi)")
        return self

    @property
    def twod_resolved(self) -> Literal["canonical", "csv", "webdataset", "none"]:
        """The 2D source actually used: `auto` resolved against the input (render shards or MVCap metadata)."""
        if self.twod_source == "auto":
            return "none" if self.mvcap_metadata is not None else "canonical"
        return self.twod_source


class TrackingParams(StrictModel):
    mlflow: bool = False  # also on when MLFLOW_TRACKING_URI is set
    experiment: str = "ovt-train"
    log_every: int = Field(5, ge=1)
    progress: bool = True


class HeldoutViewpointParams(StrictModel):
    """The held-out-viewpoints protocol: also train `<variant>_hv` on views inside `train_bands` only, so evaluation
    can score them on the complementary bands (keep `evaluate.heldout_elevation_bands` the complement)."""

    enabled: bool = True
    variants: list[Literal["contrastive", "ovt"]] = ["contrastive", "ovt"]
    train_bands: list[tuple[float, float]] = [(-90.0, 45.0)]


class TrainParams(StrictModel):
    variants: list[Variant] = ["contrastive", "ovt"]
    epochs: int = Field(2, ge=1)  # embedded default: ~2×150 steps of 64 pairs on ~7k views (see report)
    max_steps: int | None = None  # cap on optimiser steps (None = epochs × steps per epoch)
    model_mode: Literal["eval", "train"] = "eval"  # official: eval (never calls train(): VIFormer dropout off)
    # auto: bf16 autocast on CUDA, fp32 elsewhere. bf16/fp16 without CUDA: a warning, then fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint_every: int = Field(50, ge=1)  # optimiser steps between checkpoints
    keep_checkpoints: int = Field(2, ge=1)
    wise_alpha: float = Field(1.0, ge=0, le=1)  # WiSE-FT α recorded for evaluation (set_adapter_scale)
    deterministic: bool = True
    mining: MiningParams = MiningParams()
    loss: LossParams = LossParams()
    optim: OptimParams = OptimParams()
    data: DataParams = DataParams()
    tracking: TrackingParams = TrackingParams()
    heldout_viewpoints: HeldoutViewpointParams = HeldoutViewpointParams()
    # Statistical power: `seed_variants` are also trained with seeds base.seed+1 … base.seed+seeds-1 (into
    # models/<variant>/seeds/<k>/), so evaluation can average a comparison over training seeds as well as objects.
    # The registered model is always the base.seed one.
    seeds: int = Field(1, ge=1)
    seed_variants: list[str] = ["contrastive", "ovt"]

    @model_validator(mode="after")
    def _seed_variants_trained(self) -> TrainParams:
        hv = self.heldout_viewpoints
        trained = set(self.variants) | ({f"{v}_hv" for v in hv.variants} if hv.enabled else set())
        unknown = [v for v in self.seed_variants if v not in trained or v == "zeroshot"]
        if self.seeds > 1 and unknown:
            raise ValueError(f"seed_variants {unknown} are not trained variants (trained: {sorted(trained)})")
        return self

    def replicate_seeds(self, variant: str, seed: int) -> list[int]:
        """The training seeds of `variant`: `seed`, then the replicates' when it is one of `seed_variants`."""
        return [seed + k for k in range(self.seeds if variant in self.seed_variants else 1)]

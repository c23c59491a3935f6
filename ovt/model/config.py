"""Typed parameters of the model side of the train stage (`train.model`) and of the LiT bootstrap (`bootstrap`).

Defaults are the embedded default (EfficientNet-Lite0 + MiniLM, conv LoRA on the last blocks). The paper's
ViT configuration is `arch: ViT-B-32, placement: qkv, last_blocks: null` (r=8, alpha=8, VIFormer 2x(4 heads, 2048)).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ovt.params_base import StrictModel

EMBEDDED = "embedded"
TINY_TEST = "tiny-test"
DEFAULT_EMBED_DIM = 256


class LoraParams(StrictModel):
    """LoRA on the image tower. The text tower always stays frozen."""

    enabled: bool = True
    r: int = Field(8, ge=1)
    alpha: float = Field(8.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # "auto" picks the modules the placement implies; otherwise a list of module-name suffixes or one regex
    # (matched with re.fullmatch against full module names, as peft does for a string).
    targets: Literal["auto"] | list[str] | str = "auto"
    # qkv  : paper parity. Each visual nn.MultiheadAttention is swapped for an unfused module (Linear `qkv` +
    #        `proj`), LoRA goes on `qkv` only -> 4rd per block (6,599,681 trainable for ViT-B-32 with VIFormer).
    # attn : peft's native MHA LoRA (adapts in_proj and out_proj, 6rd per block).
    # conv : CNN towers (timm EfficientNet): LoRA on the pointwise 1x1 convs of the last N blocks + conv_head.
    #        Depthwise (grouped) convs are skipped: peft 0.21 needs r % groups == 0 and cannot merge them.
    placement: Literal["qkv", "attn", "conv"] = "conv"
    last_blocks: int | None = Field(2, ge=1)  # adapt only the last N blocks of the image tower; null = all


class VIFormerParams(StrictModel):
    """The paper's VIFormer: a post-norm ReLU nn.TransformerEncoder on the pooled embedding as a length-1 sequence."""

    enabled: bool = True
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    ffn: int = Field(2048, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    alpha: float = Field(0.1, ge=0.0, le=1.0)
    # code : normalize(z + alpha*f(z))          (official implementation)
    # paper: normalize(alpha*f(z) + (1-alpha)*z) (paper's text; equals "code" with alpha/(1-alpha))
    mix: Literal["code", "paper"] = "code"
    # true: L2-normalise z before f and the mix, so alpha is a ratio that does not drift when LoRA changes the
    # embedding's norm. false (official): the un-normalised feature goes into VIFormer.
    normalize_input: bool = True


class ModelParams(StrictModel):
    arch: str = EMBEDDED  # "embedded" | "tiny-test" | any open_clip model name (open_clip.list_models())
    pretrained: str | None = None  # open_clip tag, a local checkpoint file, or null (random / embedded towers)
    cache_dir: str | None = None  # where open_clip/HF weights are looked up (never fetched); null = their default
    image_size: int | None = Field(None, ge=16)  # null = the architecture's own size
    # Joint embedding width of the EMBEDDED base (see ovt/model/embedded.py); null = 256. The bootstrap trains the
    # base at this width and the train stage refuses a base of another width. open_clip architectures fix their
    # own width, so there it must stay null (it would otherwise be a value nothing reads).
    embed_dim: int | None = Field(None, ge=8)
    lora: LoraParams = LoraParams()
    viformer: VIFormerParams = VIFormerParams()
    new_logit_scale: bool = True  # a new learnable scale at ln(1/0.07) (official); false = keep the base's, frozen
    logit_scale_init: float = Field(1 / 0.07, gt=0)

    @field_validator("arch")
    @classmethod
    def _arch_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("arch must name an architecture")
        return v

    @model_validator(mode="after")
    def _embed_dim(self) -> ModelParams:
        if self.arch != EMBEDDED and self.embed_dim is not None:
            raise ValueError(
                f"embed_dim applies to the {EMBEDDED!r} arch only; {self.arch!r} fixes its own width "
                f"(set model.embed_dim: null)"
            )
        # The width is only known once the model is built for open_clip names; embedded is checked here.
        if self.arch == EMBEDDED and self.viformer.enabled and self.embedded_dim % self.viformer.heads:
            raise ValueError(f"embed_dim {self.embedded_dim} is not divisible by viformer.heads {self.viformer.heads}")
        return self

    @property
    def embedded_dim(self) -> int:
        """The embedded base's joint width (the one place its default lives)."""
        return self.embed_dim if self.embed_dim is not None else DEFAULT_EMBED_DIM

    @property
    def pretrained_open_clip(self) -> bool:
        """An open_clip architecture with pretrained weights: its base is already aligned (no bootstrap)."""
        return self.arch not in (EMBEDDED, TINY_TEST) and bool(self.pretrained)

    @property
    def log_scale_init(self) -> float:
        return math.log(self.logit_scale_init)


class BootstrapParams(StrictModel):
    """LiT bootstrap of the embedded base: locked EfficientNet, tuned MiniLM (LoRA) + projections + logit scale.

    The base's width and image size are the model block's (`model.embed_dim`, `model.image_size`); the pooled image
    features come from the features stage."""

    text_field: Literal["label", "name"] = "label"  # class text per view; rows with a null label fall back to name
    templates: list[str] = ["a 3D render of a {}.", "a rendering of a {}.", "a 3D model of a {}."]
    text_lora_r: int = Field(8, ge=1)
    text_lora_alpha: float = Field(16.0, gt=0)
    text_lora_targets: list[str] = ["query", "value"]
    steps: int = Field(400, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(20, ge=0)
    eval_heldout: bool = True  # also report validation-split zero-shot accuracy (never the test split)

    @field_validator("templates")
    @classmethod
    def _templates_have_slot(cls, v: list[str]) -> list[str]:
        if not v or any("{}" not in t for t in v):
            raise ValueError("templates must be a non-empty list of strings each containing '{}'")
        return v

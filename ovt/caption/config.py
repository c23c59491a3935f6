"""Typed parameters of the caption stage (the `caption:` block of params.yaml).

Defaults are the embedded default: offline `template` captions, category guidance on, MiniLM-token length limit,
per-object de-duplication, and the MiniLM category-consistency filter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ovt.params_base import StrictModel

# The paper's prompts (its MVCap captioning figure). `{category}` is filled from the first non-null `guidance_fields`.
PAPER_PROMPT_GUIDED = (
    "Write a short description for the image, noting that the main instance of the image is a {category}."
)
PAPER_PROMPT_PLAIN = "Write a short description for the image."


class TemplateParams(StrictModel):
    """`template` backend: honest metadata captioning (no language model)."""

    max_tags: int = Field(2, ge=0, description="at most this many asset tags mentioned per caption")
    max_colours: int = Field(2, ge=0, description="at most this many dominant foreground colours named")
    min_colour_share: float = Field(
        0.12, gt=0, le=1, description="a colour is named when it covers this share of the foreground pixels"
    )
    background_tolerance: int = Field(
        24,
        ge=0,
        le=255,
        description="max per-channel distance to the background "
        "colour that still counts as background (images without alpha)",
    )
    analysis_size: int = Field(96, ge=8, description="images are downsampled to this side before colour analysis")


class VlmParams(StrictModel):
    """`vlm` backend: a Hugging Face transformers image-to-text model (BLIP, BLIP-2, InstructBLIP)."""

    model: str = Field(
        "Salesforce/instructblip-flan-t5-xl", description="hub id (read from the local HF cache only) or a local folder"
    )
    revision: str | None = None
    prompt_guided: str = PAPER_PROMPT_GUIDED
    prompt_plain: str = PAPER_PROMPT_PLAIN
    batch_size: int = Field(16, ge=1)
    # generation mirrors the paper's call through LAVIS (`generate(..., length_penalty=-1.0, max_length=32)`,
    # LAVIS defaults otherwise: beam search with 5 beams, repetition_penalty 1.5); length_penalty only acts with beams
    max_new_tokens: int = Field(32, ge=1, description="the paper: max_length=32")
    num_beams: int = Field(5, ge=1)
    length_penalty: float = -1.0
    repetition_penalty: float = Field(1.5, gt=0)
    device: str = Field("auto", description="auto (cuda when present, else cpu), cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"

    @field_validator("prompt_guided")
    @classmethod
    def _guided_has_slot(cls, v: str) -> str:
        if "{category}" not in v:
            raise ValueError("prompt_guided must contain the placeholder {category}")
        return v


class CleaningParams(StrictModel):
    """The explicit "Clean" step (the paper's rules are unpublished): length, duplicates, category consistency."""

    tokenizer: str | None = Field(
        "minilm",
        description="'minilm' (the packaged text tower tokenizer), a local "
        "tokenizer folder, or null for a plain word limit",
    )
    max_tokens: int = Field(64, ge=4, description="text tower context length, special tokens included")
    max_words: int = Field(48, ge=1, description="word limit used when tokenizer is null")
    too_long: Literal["truncate", "drop"] = "truncate"
    min_words: int = Field(2, ge=1, description="shorter captions are dropped as empty")
    dedup_per_object: bool = Field(
        True,
        description="drop a caption identical (case/space-insensitive) to an earlier view's caption of the same object",
    )
    consistency_filter: bool = True
    consistency_field: Literal["label", "category", "name"] = Field(
        "label", description="the class a caption must agree with; rows where it is null are not checked"
    )
    consistency_prompt: str = "a 3D render of a {}."
    embed_batch_size: int = Field(64, ge=1)


def _default_guidance_fields() -> list[Literal["label", "name", "category"]]:
    # a typed function: mypy cannot infer a lambda's list of literals against pydantic's default_factory overloads
    return ["label", "name"]


class CaptionParams(StrictModel):
    backend: Literal["template", "vlm"] = "template"
    guidance: bool = Field(
        True, description="category guidance (the paper's prompt names the category); off = the paper's ablation"
    )
    guidance_fields: list[Literal["label", "name", "category"]] = Field(
        default_factory=_default_guidance_fields,
        min_length=1,
        description="first non-null field of the view row names the guided category",
    )
    template: TemplateParams = TemplateParams()
    vlm: VlmParams = VlmParams()
    cleaning: CleaningParams = CleaningParams()
    export_images: bool = Field(
        False,
        description="also write mvcap/views/<asset_id>/<view>.png so the export is "
        "readable by the original OVT code without our shards",
    )

"""Typed parameters of the features stage (the `features:` block of params.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ovt.params_base import StrictModel


class FeatureParams(StrictModel):
    batch_size: int = Field(32, ge=1, description="images per frozen-tower forward")
    # fp16 halves memory and disk; the prefix feeds a trainable tail whose own computation stays fp32
    dtype: Literal["float16", "float32"] = "float16"
    # The prefix cache is refused when it would not fit (host RAM per rank at train time) or would save no compute
    # (no frozen block below the first adapted one): then only pooled features are stored and training reads images.
    max_prefix_gib: float = Field(8.0, gt=0, description="largest prefix cache the train stage may hold in RAM")
    threads: int | None = Field(None, ge=1, description="torch threads (null = torch's default)")

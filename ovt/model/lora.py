"""LoRA placement on the image tower (peft), scoped so the text tower never gets an adapter.

Placements (ModelParams.lora.placement):
- "qkv":  swap each adapted visual nn.MultiheadAttention for UnfusedMultiheadAttention and put LoRA on its `qkv`
          Linear only (paper parity: 4rd per block). The swap must also be applied before loading a saved adapter.
- "attn": peft's native MHA LoRA on `visual.transformer.resblocks.N.attn` (in- and out-projection, 6rd per block).
          Never target `out_proj` alone: MHA reads out_proj.weight directly, so such a LoRA gets no gradient.
- "conv": timm EfficientNet: peft Conv2d LoRA on the pointwise (1x1) convs of the last N blocks + conv_head.
          Depthwise convs (groups > 1) are skipped: peft 0.21 requires r % groups == 0 and cannot merge them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Conv2d as LoraConv2d
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from torch import nn

from ovt.model.config import LoraParams
from ovt.model.mha import swap_mha
from ovt.model.towers import TowerSplit

ADAPTER = "default"


def _selected_blocks(split: TowerSplit, last_blocks: int | None) -> list[str]:
    names = split.block_names
    if last_blocks is not None and last_blocks > len(names):
        raise ValueError(f"lora.last_blocks={last_blocks} but the image tower has only {len(names)} blocks")
    return names if last_blocks is None else names[-last_blocks:]


def _check_placement(split: TowerSplit, placement: str) -> None:
    need = {"qkv": "vit", "attn": "vit", "conv": "efficientnet"}[placement]
    if split.kind != need:
        raise ValueError(
            f"lora.placement={placement!r} needs a {need} image tower; this model's is {split.kind} "
            f"(use {'conv' if split.kind == 'efficientnet' else 'qkv or attn'})"
        )


def prepare_base(clip: nn.Module, split: TowerSplit, cfg: LoraParams) -> list[str]:
    """Structural changes that must precede LoRA injection (and adapter loading): the unfused MHA swap."""
    if not cfg.enabled or cfg.placement != "qkv":
        return []
    blocks = _selected_blocks(split, cfg.last_blocks)
    pattern = "|".join(re.escape(b) + r"\.attn" for b in blocks)
    return swap_mha(clip, f"(?:{pattern})")


def target_modules(clip: nn.Module, split: TowerSplit, cfg: LoraParams) -> list[str] | str:
    """What peft should adapt: explicit targets pass through; "auto" resolves from the placement."""
    if cfg.targets != "auto":
        return cfg.targets
    _check_placement(split, cfg.placement)
    blocks = _selected_blocks(split, cfg.last_blocks)
    if cfg.placement == "qkv":
        return [f"{b}.attn.qkv" for b in blocks]
    if cfg.placement == "attn":
        idx = "|".join(b.rsplit(".", 1)[1] for b in blocks)
        return rf"visual\.transformer\.resblocks\.(?:{idx})\.attn"
    names = []
    for b in blocks:
        for name, m in clip.get_submodule(b).named_modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1:
                names.append(f"{b}.{name}")
    return names + ["visual.trunk.conv_head"]


def apply_lora(clip: nn.Module, split: TowerSplit, cfg: LoraParams) -> PeftModel:
    """Wrap the whole CLIP in a PeftModel (freezes every base weight) with LoRA on the image tower only."""
    targets = target_modules(clip, split, cfg)
    config = LoraConfig(
        r=cfg.r,
        # peft annotates lora_alpha as int but only ever divides it by r: a float alpha is valid
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
    )
    try:
        peft_model = get_peft_model(clip, config)
    except ValueError as err:
        raise ValueError(f"lora.targets {targets!r} matched nothing usable in {type(clip).__name__}: {err}") from err
    outside = sorted(
        {
            n.split(".lora_")[0]
            for n, p in cast(nn.Module, peft_model.base_model.model).named_parameters()
            if "lora_" in n and not n.startswith("visual.")
        }
    )
    if outside:
        raise ValueError(f"lora.targets {targets!r} reach outside the image tower (text must stay frozen): {outside}")
    return peft_model


def adapted_module_names(clip: nn.Module) -> list[str]:
    return [name for name, m in clip.named_modules() if isinstance(m, LoraLayer)]


def set_lora_scale(clip: nn.Module, scale: float) -> None:
    """WiSE-FT: scaling = scale * alpha / r on every LoRA layer (0 = base weights, 1 = trained adapter)."""
    for m in clip.modules():
        if isinstance(m, LoraLayer):
            m.set_scale(ADAPTER, scale)


def _foldable(m: LoraLayer) -> bool:
    """A plain LoRA Linear/Conv2d whose active adapters act as W + ΔW on this forward: no variant (DoRA), no LoRA
    bias, not merged or disabled, LoRA dropout inactive."""
    if type(m) not in (LoraLinear, LoraConv2d) or m.merged or m.disable_adapters:
        return False
    for a in m.active_adapters:
        if a not in m.lora_A:
            continue
        if a in m.lora_variant or m.lora_bias.get(a, False):
            return False
        drop = m.lora_dropout[a]
        if drop.training and isinstance(drop, nn.Dropout) and drop.p > 0:
            return False
    return True


@contextmanager
def folded_lora(root: nn.Module) -> Iterator[int]:
    """Within: every LoRA layer under `root` is replaced by a plain copy of its base layer whose weight is W + ΔW
    (peft's `get_delta_weight`, summed over the active adapters), so a forward costs what the base layer costs:
    the adapter branch (two rank-r convs/matmuls, then a scale and an add over the layer's whole output) is gone.
    The same function up to float rounding. Nothing is written to the weights: the original layers are put back on
    exit. For no-grad inference passes only (no gradient reaches the adapters through a folded weight). Yields the
    number of folded layers: 0, and the model runs unchanged, when any layer cannot be folded (`_foldable`)."""
    layers = [(name, m) for name, m in root.named_modules() if isinstance(m, LoraLayer)]
    if not layers or not all(_foldable(m) for _, m in layers):
        yield 0
        return
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        with torch.no_grad():
            for name, m in layers:
                layer = cast(LoraLinear | LoraConv2d, m)
                base = cast(nn.Module, layer.get_base_layer())
                deltas = [layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A]
                weight = cast(torch.Tensor, base.weight)
                folded = copy.copy(base)  # shares hooks and buffers; its own parameter table
                folded._parameters = dict(base._parameters)
                folded._parameters["weight"] = nn.Parameter(weight + sum(deltas), requires_grad=False)
                parent_name, _, child = name.rpartition(".")
                parent = root.get_submodule(parent_name)
                swaps.append((parent, child, layer))
                setattr(parent, child, folded)
        yield len(layers)
    finally:
        for parent, child, original in reversed(swaps):
            setattr(parent, child, original)

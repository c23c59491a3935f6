"""Image towers seen as `stem -> blocks[0..n) -> head`, so the OVT model can split them at the first adapted block.

`prefix(x, k)` runs the stem and blocks[:k]; `pooled(h, k)` runs blocks[k:] and the pooling (the tower's output
before its projection); `project(p)` is the projection, and `tail(h, k) = project(pooled(h, k))`, so
`tail(prefix(x, k), k) == tower(x)` exactly. Training on CPU caches `prefix` once, since everything below the first
adapted block is frozen. Supported towers: open_clip's VisionTransformer and open_clip's TimmModel over a timm
EfficientNet (the embedded base). `k = -1` means the stem itself is adapted: the prefix is the raw image.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn


class TowerSplit:
    kind: str
    block_names: list[str]  # full module names (relative to the CLIP model) of the blocks, in forward order
    stem_names: list[str]  # modules that run before block 0

    def __init__(self, clip: nn.Module):
        self.clip = clip

    @property
    def visual(self) -> nn.Module:
        return cast(nn.Module, self.clip.visual)

    def prefix(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The stem and blocks[:k] (the raw image when k < 0)."""
        raise NotImplementedError

    def pooled(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """blocks[k:] and the pooling on a prefix output: the tower's output before its projection."""
        raise NotImplementedError

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The tower's projection."""
        raise NotImplementedError

    def tail(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """blocks[k:] + pooling + projection on a prefix output (the raw image when k < 0)."""
        return self.project(self.pooled(h, k))

    def first_block_of(self, module_names: list[str]) -> int:
        """Index of the first block holding any of `module_names`; len(blocks) if none (only head modules)."""
        first = len(self.block_names)
        for name in module_names:
            if any(name == s or name.startswith(s + ".") for s in self.stem_names):
                return -1
            for i, b in enumerate(self.block_names):
                if name.startswith(b + "."):
                    first = min(first, i)
        return first


class ViTSplit(TowerSplit):
    kind = "vit"

    def __init__(self, clip: nn.Module):
        super().__init__(clip)
        n = len(self._vit.transformer.resblocks)
        self.block_names = [f"visual.transformer.resblocks.{i}" for i in range(n)]
        self.stem_names = [
            "visual.conv1",
            "visual.class_embedding",
            "visual.positional_embedding",
            "visual.ln_pre",
            "visual.patch_dropout",
        ]

    @property
    def _vit(self) -> Any:
        # open_clip's VisionTransformer, reached by duck typing (tower_split checks its attributes):
        # nn.Module.__getattr__ would type each of its submodules as Tensor | Module.
        return self.visual

    def prefix(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if k < 0:
            return x
        v = self._vit
        x = v._embeds(x)
        if not v.transformer.batch_first:
            x = x.transpose(0, 1)
        for blk in v.transformer.resblocks[:k]:
            x = blk(x, attn_mask=None)
        return x

    def pooled(self, h: torch.Tensor, k: int) -> torch.Tensor:
        v = self._vit
        if k < 0:
            h = self.prefix(h, 0)
            k = 0
        for blk in v.transformer.resblocks[k:]:
            h = blk(h, attn_mask=None)
        if not v.transformer.batch_first:
            h = h.transpose(0, 1)
        pooled, _ = v._pool(h)
        return pooled

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        v = self._vit
        return pooled @ v.proj if v.proj is not None else pooled


class EfficientNetSplit(TowerSplit):
    kind = "efficientnet"

    def __init__(self, clip: nn.Module):
        super().__init__(clip)
        trunk = self._trunk
        self.blocks = [blk for stage in trunk.blocks for blk in stage]
        self.block_names = [
            f"visual.trunk.blocks.{s}.{j}" for s, stage in enumerate(trunk.blocks) for j in range(len(stage))
        ]
        self.stem_names = ["visual.trunk.conv_stem", "visual.trunk.bn1"]

    @property
    def _trunk(self) -> Any:
        # timm's EfficientNet inside open_clip's TimmModel, reached by duck typing (tower_split checks its
        # attributes): nn.Module.__getattr__ would type each of its submodules as Tensor | Module.
        return self.visual.trunk

    def prefix(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if k < 0:
            return x
        trunk = self._trunk
        x = trunk.bn1(trunk.conv_stem(_nhwc(x)))
        for blk in self.blocks[:k]:
            x = blk(x)
        return x

    def pooled(self, h: torch.Tensor, k: int) -> torch.Tensor:
        trunk = self._trunk
        h = _nhwc(h)
        if k < 0:
            h = trunk.bn1(trunk.conv_stem(h))
            k = 0
        for blk in self.blocks[k:]:
            h = blk(h)
        return trunk.forward_head(trunk.bn2(trunk.conv_head(h)))

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return cast(nn.Module, self.visual.head)(pooled)


CHANNELS_LAST = True  # benchmarks/bench_layout.py switches it off to measure the other layout


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """Channels-last activations: oneDNN's depthwise/pointwise convolutions run much faster on CPU in this layout
    (benchmarks/bench_layout.py); the weights stay as they are, so state dicts and safetensors are unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if CHANNELS_LAST and x.dim() == 4 else x


def tower_split(clip: nn.Module) -> TowerSplit:
    visual = getattr(clip, "visual", None)
    if visual is not None and hasattr(visual, "transformer") and hasattr(visual, "_embeds"):
        return ViTSplit(clip)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "conv_head"):
        return EfficientNetSplit(clip)
    raise NotImplementedError(
        f"image tower {type(visual).__name__} is not supported "
        "(open_clip VisionTransformer or timm EfficientNet via TimmModel)"
    )

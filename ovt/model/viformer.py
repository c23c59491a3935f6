"""VIFormer (OVT paper): a residual transformer on the pooled image embedding.

z enters as a length-1 sequence (official `x.unsqueeze(0)`, batch_first=False), so self-attention degenerates to
`out_proj(W_v z)`: VIFormer is a per-sample residual MLP with no interaction across views or the batch. PyTorch's
encoder defaults are kept (post-norm, ReLU), as in the official code. Parameters per layer: 4d^2 + (2*ffn + 9)d + ffn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovt.model.config import VIFormerParams


class VIFormer(nn.Module):
    def __init__(self, dim: int, cfg: VIFormerParams):
        super().__init__()
        if dim % cfg.heads:
            raise ValueError(f"VIFormer: embedding dim {dim} is not divisible by heads {cfg.heads}")
        layer = nn.TransformerEncoderLayer(
            dim,
            cfg.heads,
            dim_feedforward=cfg.ffn,
            dropout=cfg.dropout,
            activation="relu",
            batch_first=False,
            norm_first=False,
        )
        # enable_nested_tensor only matters for padded batches; off avoids a warning and a fast path we never hit
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.alpha, self.mix, self.normalize_input = cfg.alpha, cfg.mix, cfg.normalize_input
        self.scale = 1.0  # WiSE-FT interpolation of the residual (set_adapter_scale)

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        """f(z) for z [B, D]: one length-1 sequence per sample."""
        return self.encoder(z.unsqueeze(0)).squeeze(0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D] pooled embedding -> [B, D] L2-normalised mixed embedding."""
        if self.normalize_input:
            z = F.normalize(z, dim=-1)
        a = self.alpha * self.scale
        if a == 0.0:  # exact base output, and no wasted compute at scale 0
            return F.normalize(z, dim=-1)
        f = self.residual(z)
        mixed = z + a * f if self.mix == "code" else a * f + (1.0 - a) * z
        return F.normalize(mixed, dim=-1)

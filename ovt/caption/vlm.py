"""The `vlm` backend: a Hugging Face transformers image-to-text model (BLIP, BLIP-2, InstructBLIP).

The real path: `AutoProcessor` + `AutoModelForImageTextToText` from a local folder or the local HF cache
(`local_files_only=True`: nothing is downloaded), processor(images, prompt) -> `generate` -> `batch_decode`.

Batches hold views with the *same* prompt (views of one object share it), so prompts are never padded. That matters
for BLIP, whose `generate` overwrites the first prompt token with BOS and drops the last one (the [SEP]): with
right-padded prompts it would drop a pad instead and feed [SEP] mid-prompt.

Prompt semantics differ by architecture, handled by `model_type`:
- `blip` (conditional captioning): the prompt is a caption *prefix* ("a 3d render of a chair,") and the output
  continues it, so the prefix stays in the caption;
- instruction models (InstructBLIP, BLIP-2): the prompt is an instruction; an echoed prompt is stripped.
"""

from __future__ import annotations

import logging
from itertools import groupby
from pathlib import Path
from typing import Any, Sequence

from ovt.caption.base import Caption, View, guidance_category
from ovt.caption.config import VlmParams
from ovt.io import stable_digest

log = logging.getLogger(__name__)


class MissingModelError(RuntimeError):
    """The VLM's weights are not available locally (nothing can be downloaded here)."""


def resolve_device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"caption.vlm.device={spec!r} but CUDA is not available")
    return spec


def resolve_dtype(spec: str, device: str):
    import torch

    if spec == "auto":
        # half precision only on GPU: CPU fp16 generate is slow or unsupported for several ops
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, spec)


class VlmCaptioner:
    backend = "vlm"

    def __init__(
        self, params: VlmParams, *, guidance: bool = True, guidance_fields: Sequence[str] = ("label", "name")
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.params = params
        self.guidance = guidance
        self.guidance_fields = list(guidance_fields)
        self.device = resolve_device(params.device)
        self.dtype = resolve_dtype(params.dtype, self.device)
        source = params.model
        kwargs: dict[str, Any] = {"local_files_only": True}
        if params.revision:
            kwargs["revision"] = params.revision
        if Path(source).expanduser().exists():
            source = str(Path(source).expanduser())
        try:
            config = AutoConfig.from_pretrained(source, **kwargs)
            self.processor = AutoProcessor.from_pretrained(source, **kwargs)
            self.net = AutoModelForImageTextToText.from_pretrained(source, dtype=self.dtype, **kwargs)
        except (OSError, ValueError) as err:
            raise MissingModelError(
                f"caption.vlm.model={params.model!r}: weights/processor not found locally (looked in the folder or "
                f"the local Hugging Face cache; downloads are disabled). Put the model there (e.g. "
                f"`hf download {params.model}` on a connected machine) or set caption.vlm.model to a local folder. "
                f"Cause: {err}"
            ) from err
        # transformers wraps PreTrainedModel.to in a decorator whose annotation drops the bound self
        self.net.to(self.device).eval()  # type: ignore[arg-type]
        self.model_type = config.model_type
        self.model = params.model
        # provenance: the commit hash of a cached hub model when known, else the folder's config name/version
        self.model_version = (
            getattr(config, "_commit_hash", None)
            or params.revision
            or f"{config.model_type}:config-{stable_digest(config.to_json_string())[:12]}@transformers-{_tf_version()}"
        )
        self._torch = torch

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "params": self.params.model_dump(),
            "model_version": self.model_version,
            "guidance": self.guidance,
            "guidance_fields": self.guidance_fields,
        }

    def prompt_for(self, view: View) -> tuple[str, bool]:
        word = guidance_category(view, self.guidance_fields) if self.guidance else None
        if word:
            return self.params.prompt_guided.format(category=word), True
        return self.params.prompt_plain, False

    def caption(self, views: Sequence[View], seeds: Sequence[int]) -> list[Caption]:
        if len(views) != len(seeds):
            raise ValueError(f"{len(views)} views but {len(seeds)} seeds")
        prompts = [self.prompt_for(v) for v in views]
        out: list[Caption | None] = [None] * len(views)
        order = sorted(range(len(views)), key=lambda i: prompts[i][0])  # stable: views of one prompt together
        for (prompt, guided), group in groupby(order, key=lambda i: prompts[i]):
            idx = list(group)
            for start in range(0, len(idx), self.params.batch_size):
                chunk = idx[start : start + self.params.batch_size]
                # sampling is off (greedy/beam), but seed anyway so any stochastic generate config is reproducible
                self._torch.manual_seed(seeds[chunk[0]])
                texts = self._generate([views[i].image for i in chunk], prompt)
                for i, text in zip(chunk, texts):
                    out[i] = Caption(
                        key=views[i].key,
                        caption=text,
                        backend=self.backend,
                        model=self.model,
                        model_version=self.model_version,
                        prompt=prompt,
                        guided=guided,
                        seed=seeds[i],
                    )
        return [c for c in out if c is not None]

    def _generate(self, images: list, prompt: str) -> list[str]:
        rgb = [im.convert("RGB") for im in images]
        inputs = self.processor(images=rgb, text=[prompt] * len(rgb), return_tensors="pt")
        inputs = {
            k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in inputs.items()
            if hasattr(v, "to")
        }
        gen = {
            "max_new_tokens": self.params.max_new_tokens,
            "do_sample": False,
            "num_beams": self.params.num_beams,
            "repetition_penalty": self.params.repetition_penalty,
        }
        if self.params.num_beams > 1:  # length_penalty only scores beams; transformers warns when given without
            gen["length_penalty"] = self.params.length_penalty
        with self._torch.inference_mode():
            ids = self.net.generate(**inputs, **gen)
        texts = [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        if self.model_type != "blip":
            texts = [_strip_echo(t, prompt) for t in texts]
        return texts


def _strip_echo(text: str, prompt: str) -> str:
    """Decoder-only LMs return prompt + answer; keep the answer."""
    if text.lower().startswith(prompt.lower().strip()):
        return text[len(prompt.strip()) :].strip()
    return text


def _tf_version() -> str:
    import transformers

    return transformers.__version__

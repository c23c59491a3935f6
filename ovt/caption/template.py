"""The `template` backend: honest metadata captioning, not a language model.

A caption states only what is known about the view:
- from the asset (only with category guidance on): its name, label/category, a few tags, real-size words;
- from the camera: front/side/back and above/level/below (viewpoint.py);
- from the pixels: the dominant foreground colours (colours.py).

Guidance off (the paper's ablation) means no asset metadata at all: the caption says what the pixels and camera
say ("a brown and white object seen from the back"), the template analogue of a VLM prompted without the category.
Several phrasings are drawn per view from a seeded RNG, so the views of one object do not share one fixed string.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from ovt.caption.base import Caption, View, guidance_category
from ovt.caption.colours import dominant_colours
from ovt.caption.config import TemplateParams
from ovt.caption.viewpoint import view_words

VERSION = "template-1"

# {desc}: "a small brown teddy bear"; {what}: ", a toy from the Miscellaneous catalogue" (may be empty);
# {tags}: " (plush, child)" (may be empty); {view}: "seen from the back, from above".
_GUIDED = [
    "a 3D render of {desc}{what}, {view}{tags}.",
    "{Desc}{tags}, {view}{what}.",
    "a rendering of {desc} {view}{what}{tags}.",
    "{View}: {desc}{what}{tags}.",
    "a 3D model of {desc}{tags}{what}, {view}.",
    "{Desc} shown on a plain background, {view}{what}.",
]
_PLAIN = [
    "a 3D render of {desc}, {view}.",
    "{Desc}, {view}.",
    "a rendering of {desc} {view}.",
    "{View}: {desc}.",
]


def article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def size_words(dims_cm: dict[str, float] | None) -> list[str]:
    """Words a person would use for the real size: small/large by the longest side, tall/wide by proportions."""
    if not dims_cm:
        return []
    try:
        w, d, h = (float(dims_cm.get(k) or 0.0) for k in ("width", "depth", "height"))
    except (TypeError, ValueError):
        return []
    longest = max(w, d, h)
    if longest <= 0:
        return []
    words = []
    if longest < 25:
        words.append("small")
    elif longest > 180:
        words.append("large")
    if h > 1.8 * max(w, d, 1e-6) and h >= 40:
        words.append("tall")
    elif max(w, d) > 2.5 * max(h, 1e-6):
        words.append("low" if h < 50 else "wide")
    return words


def _join(words: Sequence[str]) -> str:
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


class TemplateCaptioner:
    backend = "template"
    model = "metadata-template"
    model_version = VERSION

    def __init__(
        self, params: TemplateParams, *, guidance: bool = True, guidance_fields: Sequence[str] = ("label", "name")
    ) -> None:
        self.params = params
        self.guidance = guidance
        self.guidance_fields = list(guidance_fields)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "version": VERSION,
            "params": self.params.model_dump(),
            "guidance": self.guidance,
            "guidance_fields": self.guidance_fields,
        }

    def caption(self, views: Sequence[View], seeds: Sequence[int]) -> list[Caption]:
        if len(views) != len(seeds):
            raise ValueError(f"{len(views)} views but {len(seeds)} seeds")
        return [self.caption_one(v, s) for v, s in zip(views, seeds)]

    def caption_one(self, view: View, seed: int) -> Caption:
        p = self.params
        rng = random.Random(seed)
        colours = dominant_colours(
            view.image,
            max_colours=p.max_colours,
            min_share=p.min_colour_share,
            tolerance=p.background_tolerance,
            analysis_size=p.analysis_size,
        ).names
        vw = view_words(view.azimuth, view.elevation)
        colour_words = " and ".join(colours)
        guided_word = guidance_category(view, self.guidance_fields) if self.guidance else None
        if guided_word:
            noun = (view.field_value("name") or guided_word).strip().lower()
            adjectives = [*size_words(view.dims_cm), *([colour_words] if colour_words else [])]
            desc = article(" ".join([*adjectives, noun]))
            what = self._what_clause(view, noun, guided_word, rng)
            tags = self._tags_clause(view, noun, rng)
            template = rng.choice(_GUIDED)
            prompt = f"template:guided[{_GUIDED.index(template)}]"
        else:
            desc = article(" ".join([*([colour_words] if colour_words else []), "object"]))
            what = tags = ""
            template = rng.choice(_PLAIN)
            prompt = f"template:plain[{_PLAIN.index(template)}]"
        text = template.format(
            desc=desc,
            Desc=desc[:1].upper() + desc[1:],
            what=what,
            tags=tags,
            view=vw.phrase,
            View=vw.phrase[:1].upper() + vw.phrase[1:],
        )
        return Caption(
            key=view.key,
            caption=text,
            backend=self.backend,
            model=self.model,
            model_version=self.model_version,
            prompt=prompt,
            guided=bool(guided_word),
            seed=seed,
        )

    @staticmethod
    def _what_clause(view: View, noun: str, guided_word: str, rng: random.Random) -> str:
        """Name the guidance class when the name does not already say it, and the catalogue category."""
        parts = []
        if guided_word not in noun:
            parts.append(article(guided_word))
        category = view.field_value("category")
        if category and category.lower() not in noun:
            parts.append(rng.choice([f"from the {category} category", f"from the {category} catalogue"]))
        return (", " + " ".join(parts)) if parts else ""

    def _tags_clause(self, view: View, noun: str, rng: random.Random) -> str:
        tags = sorted({t.strip().lower() for t in view.tags if isinstance(t, str) and t.strip()} - {noun})
        tags = [t for t in tags if t not in noun]
        if not tags or self.params.max_tags == 0:
            return ""
        chosen = rng.sample(tags, min(self.params.max_tags, len(tags)))
        return rng.choice([f" ({', '.join(chosen)})", f", tagged {_join(chosen)}"])

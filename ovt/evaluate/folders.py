"""Benchmark folders in the layout the paper's evaluation uses.

A benchmark is a triple (image folder, vocabulary file, gt file): the vocabulary file lists the classifier's class
names one per line; line k of the gt file names the class of the k-th *sorted* sub-folder of the image folder.
This covers ImageNet-V (78-name vocabulary), ImageNet-V+ / OOD-CV / ImageNet-100 (100 names) and MIRO (1000).
Class names are used verbatim, underscores included, as the paper does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ovt.evaluate.zeroshot import ZeroShotClassifier, build_classifier, imagenet_templates, topk_correct

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"})


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    folder: Path
    vocabulary: Path
    gt: Path


@dataclass(frozen=True)
class BenchmarkSet:
    name: str
    classnames: tuple[str, ...]  # the vocabulary (classifier label space)
    paths: tuple[Path, ...]
    targets: np.ndarray  # [N] index into classnames


def read_names(path: Path, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{what} file is empty: {path}")
    return names


def load_benchmark(spec: BenchmarkSpec) -> BenchmarkSet:
    folder = Path(spec.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"benchmark {spec.name!r}: image folder not found: {folder}")
    vocab = read_names(spec.vocabulary, f"benchmark {spec.name!r} vocabulary")
    if len(set(vocab)) != len(vocab):
        dup = sorted({v for v in vocab if vocab.count(v) > 1})
        raise ValueError(f"benchmark {spec.name!r}: duplicate names in vocabulary {spec.vocabulary}: {dup}")
    gt = read_names(spec.gt, f"benchmark {spec.name!r} gt")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if len(gt) != len(subdirs):
        raise ValueError(
            f"benchmark {spec.name!r}: gt file {spec.gt} has {len(gt)} names but {folder} has "
            f"{len(subdirs)} class folders (line k names the k-th sorted folder)"
        )
    index = {n: i for i, n in enumerate(vocab)}
    unknown = sorted({g for g in gt if g not in index})
    if unknown:
        raise ValueError(f"benchmark {spec.name!r}: gt names not in vocabulary {spec.vocabulary}: {unknown}")
    paths: list[Path] = []
    targets: list[int] = []
    for sub, name in zip(subdirs, gt):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            log.warning("benchmark %s: class folder %s has no images", spec.name, sub)
        paths.extend(files)
        targets.extend([index[name]] * len(files))
    if not paths:
        raise ValueError(f"benchmark {spec.name!r}: no images under {folder}")
    return BenchmarkSet(spec.name, tuple(vocab), tuple(paths), np.asarray(targets, dtype=np.int64))


@torch.no_grad()
def score_benchmark(
    model,
    data: BenchmarkSet,
    *,
    classifier: ZeroShotClassifier | None = None,
    templates: Sequence[str] | None = None,
    scale: float = 100.0,
    top_k: int = 5,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, float]:
    """Zero-shot top-1 / top-k of `model` (encode_image, encode_text, preprocess) on one benchmark set.

    Unreadable images are skipped and counted (`n_failed`), never fatal.
    """
    if classifier is None:
        classifier = build_classifier(
            model.encode_text, data.classnames, templates or imagenet_templates(), scale=scale
        )
    top1: list[np.ndarray] = []
    topk: list[np.ndarray] = []
    failed = 0
    order = range(0, len(data.paths), batch_size)
    for start in tqdm(order, desc=f"zero-shot {data.name}", disable=not progress, unit="batch"):
        imgs, tgts = [], []
        for p, t in zip(data.paths[start : start + batch_size], data.targets[start : start + batch_size]):
            try:
                with Image.open(p) as im:
                    imgs.append(model.preprocess(im.convert("RGB")))
                tgts.append(int(t))
            except (OSError, ValueError) as err:
                failed += 1
                log.warning("benchmark %s: skipping unreadable image %s: %s", data.name, p, err)
        if not imgs:
            continue
        logits = classifier.logits(model.encode_image(torch.stack(imgs)))
        tg = torch.as_tensor(tgts)
        top1.append(topk_correct(logits, tg, 1))
        topk.append(topk_correct(logits, tg, top_k))
    n = int(sum(len(a) for a in top1))
    if n == 0:
        raise ValueError(f"benchmark {data.name!r}: no readable images")
    return {
        "top1": float(np.concatenate(top1).mean()),
        f"top{top_k}": float(np.concatenate(topk).mean()),
        "n": n,
        "n_failed": failed,
    }


def run_benchmark_table(
    model,
    specs: Sequence[BenchmarkSpec],
    *,
    scale: float = 100.0,
    top_k: int = 5,
    batch_size: int = 64,
    templates: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """The paper's zero-shot table for one model: {benchmark: {top1, topk, n}} plus a `mean` row.

    Classifiers are cached per vocabulary file, since several benchmarks share one (e.g. the 100-class list).
    """
    templates = list(templates or imagenet_templates())
    cache: dict[tuple[str, ...], ZeroShotClassifier] = {}
    table: dict[str, dict[str, float]] = {}
    for spec in specs:
        data = load_benchmark(spec)
        if data.classnames not in cache:
            cache[data.classnames] = build_classifier(model.encode_text, data.classnames, templates, scale=scale)
        table[spec.name] = score_benchmark(
            model,
            data,
            classifier=cache[data.classnames],
            scale=scale,
            top_k=top_k,
            batch_size=batch_size,
            progress=progress,
        )
    if table:
        keys = ("top1", f"top{top_k}")
        table["mean"] = {k: float(np.mean([row[k] for row in table.values()])) for k in keys}
    return table

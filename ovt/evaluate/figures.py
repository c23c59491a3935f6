"""Figures of the evaluate stage: accuracy heat map, worst rendered views, worst poses found by the search."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from ovt.io import atomic_writer

log = logging.getLogger(__name__)


def _savefig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_writer(path, "wb") as fh:
        fh.write(buf.getvalue())


def heatmap_figure(grids: Mapping[str, tuple[np.ndarray, np.ndarray]], edges: Sequence[float], path: Path) -> None:
    """Accuracy by elevation band x azimuth bin, one panel per model, shared colour scale (base vs tuned)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(grids)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names) + 0.8, 3.4), squeeze=False)
    im = None
    for ax, name in zip(axes[0], names):
        acc, counts = grids[name]
        n_az = acc.shape[1]
        im = ax.imshow(np.ma.masked_invalid(acc), origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (b, a), v in np.ndenumerate(acc):
            if counts[b, a]:
                ax.text(
                    a, b, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black"
                )
        ax.set_title(name)
        ax.set_xticks(range(n_az), [f"{(a * 360 / n_az + 180) % 360 - 180:g}" for a in range(n_az)], fontsize=7)
        ax.set_yticks(
            range(len(edges) - 1), [f"{edges[b]:g}..{edges[b + 1]:g}" for b in range(len(edges) - 1)], fontsize=7
        )
        ax.set_xlabel("azimuth bin centre (deg)")
    axes[0][0].set_ylabel("elevation band (deg)")
    if im is None:
        raise ValueError("heatmap_figure: no grids to plot")
    fig.colorbar(im, ax=axes[0].tolist(), label="top-1 accuracy", shrink=0.85)
    _savefig(fig, path)
    plt.close(fig)


def gallery_figure(items: Sequence[tuple[Image.Image, str]], title: str, path: Path, cols: int = 4) -> None:
    """A grid of images with captions (true/predicted class, pose, true-class probability)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not items:
        return
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (img, caption) in zip(axes.ravel(), items):
        ax.imshow(img)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9)
    _savefig(fig, path)
    plt.close(fig)


def worst_views_figure(res, views, size: int, title: str, path: Path) -> None:
    """The lowest-margin rendered view of each object, worst objects first (at most `size`)."""
    margin, pred = res.margin, res.pred
    seen: set[int] = set()
    items = []
    for i in np.argsort(margin):
        o = int(views.object_index[i])
        if o in seen:
            continue
        seen.add(o)
        r = views.rows[i]
        caption = (
            f"{r['label']} -> {views.classnames[int(pred[i])]}\n"
            f"az {r['azimuth']:.0f} el {r['elevation']:.0f} m={margin[i]:+.3f}"
        )
        items.append((views.images[i], caption))
        if len(items) >= size:
            break
    gallery_figure(items, title, path)


def search_views_figure(
    found: Sequence[dict], render_view: Callable, asset_rows: Mapping[str, dict], size: int, title: str, path: Path
) -> None:
    """The worst poses the search found (lowest margins first), rendered again."""
    from ovt.shards import to_rgb

    items = []
    for a in sorted(found, key=lambda a: a["worst_margin"])[:size]:
        az, el, d = a["worst_pose"]
        try:
            img = to_rgb(render_view(asset_rows[a["asset_id"]], az, el, d))
        except Exception as err:  # a figure is not worth failing the stage for
            log.warning("evaluate: gallery render failed for %s: %s", a["asset_id"], err)
            continue
        pred = a["worst_pred"] or "(grid view)"
        items.append((img, f"{a['label']} -> {pred} m={a['worst_margin']:+.3f}\naz {az:.0f} el {el:.0f} d {d:.2f}"))
    gallery_figure(items, title, path)

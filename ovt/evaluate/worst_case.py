"""The worst-case viewpoint search of one model over the scored objects, with the renderer in the loop.

Per object, the pose search (pose_search.py) minimises the true-class margin over camera poses within a budget of
renders. It starts its local refinement from the object's worst rendered view (known from the scoring, no render
spent), so the worst margin it reports is never weaker than the view grid's. Three continuous measures come out:
the worst margin found, whether any render was misclassified, and the number of renders until the first one was
(censored at the budget) for a Kaplan-Meier median.

The global phase queries the same poses for every model (the per-object seed does not depend on the model), and
every model whose frozen tower is the same shares one prefix per rendered pose (`PrefixCache`): each model then
runs only its tail, as with the feature store.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ovt.evaluate.config import SearchParams
from ovt.evaluate.metrics import true_margin
from ovt.evaluate.pose_search import PoseSearch, SearchSpace
from ovt.evaluate.views import EvalViews
from ovt.evaluate.zeroshot import ZeroShotClassifier
from ovt.io import stable_digest
from ovt.shards import to_rgb

log = logging.getLogger(__name__)

RenderView = Callable[[dict, float, float, float], Image.Image]


@dataclass
class ObjectSearch:
    asset_id: str
    label: str
    grid_margin: float  # worst true-class margin over the object's rendered views
    grid_pose: tuple[float, float, float]
    worst_margin: float  # min(grid_margin, the search's renders)
    worst_pose: tuple[float, float, float]  # (azimuth, elevation, distance) of worst_margin
    worst_pred: str | None  # predicted class there (None when it is the grid's view)
    n_renders: int
    first_error: int | None  # 1-based render index of the first misclassified render

    def record(self, model: str) -> dict:
        return {"model": model, **asdict(self)}


def object_seed(seed: int, asset_id: str) -> int:
    """The same per-object seed for every model, so all models face the same global samples (paired)."""
    return int(stable_digest([seed, asset_id])[:8], 16)


def search_table(records: list[dict], object_ids: tuple[str, ...], budget: int) -> np.ndarray:
    """[n_objects, 3]: (worst margin, renders to first error or spent, 1/0 error found); NaN rows unsearched."""
    pos = {a: i for i, a in enumerate(object_ids)}
    t = np.full((len(object_ids), 3), np.nan)
    for r in records:
        if r["asset_id"] in pos:
            fe = r["first_error"]
            t[pos[r["asset_id"]]] = (
                r["worst_margin"],
                fe if fe is not None else min(r["n_renders"], budget),
                1.0 if fe is not None else 0.0,
            )
    return t


class PrefixCache:
    """Frozen-tower prefix per (tower, object, pose): models sharing a frozen tower render and encode a pose once."""

    def __init__(self) -> None:
        self._store: dict[tuple, torch.Tensor] = {}

    @staticmethod
    def tower_id(model) -> str | None:
        if not (hasattr(model, "cfg") and hasattr(model, "image_prefix") and hasattr(model, "first_adapted")):
            return None
        from ovt.features.store import tower_fields

        return stable_digest([tower_fields(model.cfg), int(model.first_adapted)])

    @torch.no_grad()
    def encode(
        self, model, items: list[tuple[dict, np.ndarray]], render_view: RenderView, batch_size: int = 64
    ) -> torch.Tensor:
        """[P, D] normalised embeddings of (asset row, pose) items, rendering and encoding in batches."""
        tower = self.tower_id(model)
        if tower is None:  # a model without a prefix/tail split: full forward
            imgs = [to_rgb(render_view(a, *(float(x) for x in p))) for a, p in items]
            return torch.cat(
                [
                    model.encode_image(torch.stack([model.preprocess(im) for im in imgs[i : i + batch_size]]))
                    for i in range(0, len(imgs), batch_size)
                ]
            )
        keys = [(tower, a["asset_id"], *(round(float(x), 4) for x in p)) for a, p in items]
        todo = list(dict.fromkeys(k for k in keys if k not in self._store))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            imgs = [to_rgb(render_view(items[first[k]][0], *(float(x) for x in items[first[k]][1]))) for k in chunk]
            batch = torch.stack([model.preprocess(im) for im in imgs]).to(model.device)
            for k, h in zip(chunk, model.image_prefix(batch).cpu()):
                self._store[k] = h
        return torch.cat(
            [
                model.image_tail(torch.stack([self._store[k] for k in keys[i : i + batch_size]]).to(model.device))
                for i in range(0, len(keys), batch_size)
            ]
        )

    def __len__(self) -> int:
        return len(self._store)


def search_model(
    model,
    classifier: ZeroShotClassifier,
    views: EvalViews,
    margins: np.ndarray,
    asset_rows: Mapping[str, dict],
    render_view: RenderView,
    p: SearchParams,
    *,
    seed: int,
    name: str,
    on_failure: Callable[[dict, str, str], None],
    cache: PrefixCache | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> list[ObjectSearch]:
    """Search the first `p.max_objects` objects for this model; `margins` are its [N] rendered-view margins.

    The objects' searches advance in lockstep: each generation renders and encodes every object's candidate poses
    in shared batches (one small batch per object would cost several times more on a CPU)."""
    space = SearchSpace(p.elevation_range, p.distance_range)
    cache = cache if cache is not None else PrefixCache()
    n_obj = len(views.object_ids)
    live: dict[int, dict] = {}
    for o in range(n_obj if p.max_objects is None else min(n_obj, p.max_objects)):
        asset_id = views.object_ids[o]
        rows_o = np.flatnonzero(views.object_index == o)
        asset = asset_rows.get(asset_id)
        if asset is None:
            on_failure({"model": name, "asset_id": asset_id}, "asset_not_in_manifest", "no acquire manifest row")
            continue
        hardest = rows_o[int(np.argmin(margins[rows_o]))]
        r = views.rows[hardest]
        grid_pose = (float(r["azimuth"]), float(r["elevation"]), float(r.get("distance", np.mean(p.distance_range))))
        live[o] = {
            "asset": asset,
            "target": int(views.target[rows_o[0]]),
            "grid_pose": grid_pose,
            "grid_margin": float(margins[hardest]),
            "n": 0,
            "first_error": None,
            "best": (np.inf, None),
            "search": PoseSearch(
                space,
                budget=p.budget,
                n_random=p.n_random,
                population=p.population,
                init_sigma=p.init_sigma,
                shrink=p.shrink,
                seed=object_seed(seed, asset_id),
                known=[(grid_pose, float(margins[hardest]))],
            ),
        }
    bar = tqdm(total=len(live) * p.budget, desc=f"worst-view search {name}", disable=not progress, unit="render")
    asks = {o: st["search"].ask() for o, st in live.items()}
    while any(a is not None for a in asks.values()):
        todo = [(o, a) for o, a in asks.items() if a is not None]
        items = [(live[o]["asset"], pose) for o, a in todo for pose in a]
        try:
            z = cache.encode(model, items, render_view, batch_size)
        except Exception as err:  # a broken mesh or render: find it object by object, drop only that object
            z = None
            log.warning("evaluate: batched search step failed (%s): retrying per object", err)
        logits_all = None if z is None else classifier.logits(z.float().cpu()).numpy()
        start = 0
        for o, poses in todo:
            st = live[o]
            if logits_all is not None:
                logits = logits_all[start : start + len(poses)]
            else:
                try:
                    logits = classifier.logits(
                        cache.encode(model, [(st["asset"], q) for q in poses], render_view).float().cpu()
                    ).numpy()
                except Exception as err:
                    on_failure(
                        {"model": name, "asset_id": st["asset"]["asset_id"]},
                        "search_failed",
                        f"{type(err).__name__}: {err}",
                    )
                    asks[o], st["failed"] = None, True
                    start += len(poses)
                    continue
            start += len(poses)
            m = true_margin(logits, np.full(len(poses), st["target"])) / classifier.scale
            for i in range(len(poses)):
                st["n"] += 1
                if m[i] < 0 and st["first_error"] is None:
                    st["first_error"] = st["n"]
                if m[i] < st["best"][0]:
                    st["best"] = (float(m[i]), classifier.classnames[int(logits[i].argmax())])
            st["search"].tell(m)
            bar.update(len(poses))
            asks[o] = st["search"].ask()
    bar.close()
    found: list[ObjectSearch] = []
    for o, st in live.items():
        if st.get("failed"):
            continue
        res = st["search"].result()
        better = st["best"][0] < st["grid_margin"]
        found.append(
            ObjectSearch(
                views.object_ids[o],
                views.classnames[st["target"]],
                st["grid_margin"],
                st["grid_pose"],
                float(min(res.best_value, st["grid_margin"])),
                (float(res.best_pose[0]), float(res.best_pose[1]), float(res.best_pose[2]))
                if better
                else st["grid_pose"],
                st["best"][1] if better else None,
                res.n_evals,
                st["first_error"],
            )
        )
    return found

"""The worst-case search driver on the tiny models: lockstep batches, shared prefixes, per-object failures."""

import numpy as np

from ovt.evaluate.config import SearchParams
from ovt.evaluate.models import ModelSpec, default_loader, load
from ovt.evaluate.views import load_views
from ovt.evaluate.worst_case import PrefixCache, search_model, search_table
from ovt.evaluate.zeroshot import build_classifier

from .fixtures import make_renders, save_tiny_models, toy_render_view


def test_search_shares_prefixes_and_isolates_a_broken_object(tmp_path):
    renders, assets = make_renders(tmp_path, n_per_class=1)
    save_tiny_models(tmp_path / "models", variants=("ovt",))
    views = load_views(renders, assets / "manifest.jsonl", max_objects=None, on_failure=print)
    asset_rows = {
        a: {"asset_id": a, "label": views.classnames[int(views.target[views.object_index == i][0])]}
        for i, a in enumerate(views.object_ids)
    }
    broken = views.object_ids[1]

    def render_view(asset, az, el, d):
        if asset["asset_id"] == broken:
            raise ValueError("mesh unreadable")
        return toy_render_view(asset, az, el, d)

    p = SearchParams(budget=6, n_random=3, population=3, max_objects=None)
    cache, fails = PrefixCache(), []
    found = {}
    for name, scale in (("base", 0.0), ("ovt", None)):
        model = load(ModelSpec(name, tmp_path / "models" / "ovt", scale), default_loader)
        clf = build_classifier(model.encode_text, views.classnames, ["a {}."])
        margins = np.zeros(len(views.rows)) + 0.5
        found[name] = search_model(
            model,
            clf,
            views,
            margins,
            asset_rows,
            render_view,
            p,
            seed=0,
            name=name,
            on_failure=lambda item, err, detail: fails.append((item["asset_id"], err)),
            cache=cache,
            progress=False,
        )
    assert fails == [(broken, "search_failed")] * 2
    assert [f.asset_id for f in found["ovt"]] == [a for a in views.object_ids if a != broken]
    # both models query the same global poses per object (and the same local ones where they agree on the best
    # start): those prefixes are computed once
    n_ok = len(views.object_ids) - 1
    assert n_ok * p.budget <= len(cache) <= n_ok * (2 * p.budget - p.n_random)
    for f in found["ovt"]:
        assert f.n_renders == p.budget and f.worst_margin <= f.grid_margin == 0.5
    table = search_table([f.record("ovt") for f in found["ovt"]], views.object_ids, p.budget)
    assert np.isnan(table[1]).all() and np.isfinite(table[[0, 2]]).all()

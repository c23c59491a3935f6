"""DVC stage `evaluate`: viewpoint robustness of every model variant on the test split (params: base, render, evaluate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovt.entry import stage_main

if TYPE_CHECKING:
    from ovt.config import Params


def _run(p: Params) -> None:
    from pathlib import Path

    from ovt.evaluate import EvaluatePaths, run
    from ovt.evaluate.renderer import make_render_view

    paths = EvaluatePaths()
    # the worst-viewpoint search renders new views with the render stage's own renderer and settings
    rv = make_render_view(p.render, Path(paths.assets_dir), p.base.seed) if p.evaluate.search.enabled else None
    run(p.evaluate, seed=p.base.seed, paths=paths, render_view=rv, prompt_words=p.base.prompt_words)


if __name__ == "__main__":
    stage_main(_run)

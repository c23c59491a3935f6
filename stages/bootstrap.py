"""DVC stage `bootstrap`: LiT alignment of the embedded base on canonical training views (params: bootstrap, model);
a marker saying "skipped" for architectures that need none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovt.entry import stage_main

if TYPE_CHECKING:
    from ovt.config import Params


def _run(p: Params) -> None:
    from ovt.model.stage import run

    run(p.bootstrap, model=p.model, seed=p.base.seed, prompt_words=p.base.prompt_words)


if __name__ == "__main__":
    stage_main(_run)

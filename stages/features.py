"""DVC stage `features`: the frozen image tower over every rendered view, once (params: features, model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovt.entry import stage_main

if TYPE_CHECKING:
    from ovt.config import Params


def _run(p: Params) -> None:
    from ovt.features import run

    run(p.features, model=p.model, seed=p.base.seed)


if __name__ == "__main__":
    stage_main(_run)

"""DVC stage `caption`: one category-guided caption per rendered view + MVCap export (params.yaml: base, caption)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovt.entry import stage_main

if TYPE_CHECKING:
    from ovt.config import Params


def _run(p: Params) -> None:
    from ovt.caption import run

    run(p.caption, seed=p.base.seed)


if __name__ == "__main__":
    stage_main(_run)

"""DVC stage `acquire`: 3D assets -> content-addressed store + manifest (params.yaml: base, acquire)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovt.entry import stage_main

if TYPE_CHECKING:
    from ovt.config import Params


def _run(p: Params) -> None:
    from ovt.acquire import AcquirePaths, run

    run(p.acquire, seed=p.base.seed, paths=AcquirePaths())


if __name__ == "__main__":
    stage_main(_run)

"""DVC stage `acquire`: 3D assets -> content-addressed store + manifest (params.yaml: base, acquire)."""

from ovt.entry import stage_main


def _run(p) -> None:
    from ovt.acquire import AcquirePaths, run

    run(p.acquire, seed=p.base.seed, paths=AcquirePaths())


if __name__ == "__main__":
    stage_main(_run)

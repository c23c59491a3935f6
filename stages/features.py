"""DVC stage `features`: the frozen image tower over every rendered view, once (params: features, model)."""

from ovt.entry import stage_main


def _run(p) -> None:
    from ovt.features import run

    run(p.features, model=p.model, seed=p.base.seed)


if __name__ == "__main__":
    stage_main(_run)

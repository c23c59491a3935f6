"""DVC stage `caption`: one category-guided caption per rendered view + MVCap export (params.yaml: base, caption)."""

from ovt.entry import stage_main


def _run(p) -> None:
    from ovt.caption import run

    run(p.caption, seed=p.base.seed)


if __name__ == "__main__":
    stage_main(_run)

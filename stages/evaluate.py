"""DVC stage `evaluate`: held-out viewpoint robustness of every model variant (params.yaml: base, render, evaluate)."""

from pathlib import Path

from ovt.config import load_params
from ovt.evaluate import run
from ovt.evaluate.renderer import make_render_view


def main() -> None:
    p = load_params()
    # the worst-viewpoint search renders new views with the render stage's own renderer and settings
    rv = make_render_view(p.render, Path("data/assets"), p.base.seed) if p.evaluate.adversarial.enabled else None
    run(p.evaluate, seed=p.base.seed, renders_dir=Path("data/renders"), assets_dir=Path("data/assets"),
        models_dir=Path("models"), out_dir=Path("data/eval"), render_view=rv)


if __name__ == "__main__":
    main()

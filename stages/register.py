"""DVC stage `register`: the trained adapter -> MLflow model registry, alias `challenger` (params: registry)."""

from pathlib import Path

from ovt.config import load_params
from ovt.registry import stage


def main() -> None:
    p = load_params()
    stage.run(p.registry, seed=p.base.seed, models_dir=Path("models"), eval_dir=Path("data/eval"),
              out_dir=Path("data/register"))


if __name__ == "__main__":
    main()

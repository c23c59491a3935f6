"""DVC stage `caption`: one category-guided caption per rendered view + MVCap export (params.yaml: base, caption)."""

from ovt.caption.stage import run
from ovt.config import load_params


def main() -> None:
    p = load_params()
    run(p.caption, seed=p.base.seed, renders_dir="data/renders", assets_dir="data/assets", out_dir="data/captions")


if __name__ == "__main__":
    main()

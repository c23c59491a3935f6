"""DVC stage `bootstrap`: the embedded base model's LiT alignment on canonical training views (params: bootstrap)."""

from pathlib import Path

from ovt.config import load_params
from ovt.model.stage import run


def main() -> None:
    p = load_params()
    run(p.bootstrap, seed=p.base.seed, renders_dir=Path("data/renders"), out_dir=Path("models/base"),
        cache_dir=Path(".cache/bootstrap-features"), metrics_path=Path("metrics/bootstrap.json"))


if __name__ == "__main__":
    main()

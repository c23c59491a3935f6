"""DVC stage `acquire`: 3D assets -> content-addressed store + manifest (params.yaml: base, acquire)."""

from ovt.acquire import run
from ovt.config import load_params


def main() -> None:
    p = load_params()
    run(p.acquire, seed=p.base.seed, out_dir="data/assets")


if __name__ == "__main__":
    main()

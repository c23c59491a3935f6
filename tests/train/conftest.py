"""pytest fixtures for the train tests (the builders live in tests/train/fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.fixtures import make_tree, tiny_model_cfg


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> tuple[Path, Path]:
    return make_tree(tmp_path_factory.mktemp("data"))


@pytest.fixture
def model_cfg():
    return tiny_model_cfg()

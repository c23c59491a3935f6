import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.caption.fixtures import write_fixture  # noqa: E402


@pytest.fixture
def data_dirs(tmp_path):
    assets_dir, renders_dir = write_fixture(tmp_path / "data")
    return assets_dir, renders_dir, tmp_path / "data" / "captions"


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory):
    from tests.caption.tiny_vlm import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("tiny_blip"))


@pytest.fixture(scope="session")
def tiny_instructblip_dir(tmp_path_factory):
    from tests.caption.tiny_vlm import build_tiny_instructblip

    return build_tiny_instructblip(tmp_path_factory.mktemp("tiny_instructblip"))

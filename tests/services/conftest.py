"""Session-scoped real SeaweedFS for the service tests (started once, on free ports, in a temp state folder)."""

from __future__ import annotations

import pytest

from ovt.services import ServiceManager
from ovt.services.testing import local_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> ServiceManager:
    """A ServiceManager on free ports with S3 running; tests may start more services, all stopped at the end."""
    with local_stack(tmp_path_factory.mktemp("ovt-state"), names=["s3"]) as mgr:
        yield mgr

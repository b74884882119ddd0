"""One running system (every api and worker as its own process) shared by the e2e tests."""
from __future__ import annotations

import pytest

from tests.e2e.system import RunningSystem
from tests.support.infra import require_or_skip


@pytest.fixture(scope="session")
def system(infra_found, tmp_path_factory):
    infra = require_or_skip(*infra_found)
    running = RunningSystem(infra, tmp_path_factory.mktemp("logs"))
    try:
        running.start()
    except Exception:
        print(running.tail())
        running.stop()
        raise
    yield running
    running.stop()

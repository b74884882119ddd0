"""Shared fixtures: real infrastructure discovery (see tests/support/infra.py)."""
from __future__ import annotations

import pytest

from tests.support import infra as infra_mod


@pytest.fixture(scope="session")
def infra_found():
    found, reason = infra_mod.discover()
    vhost = None
    if found is not None:
        found, vhost = infra_mod.isolated_vhost(found)
    yield found, reason
    if vhost:
        infra_mod.delete_vhost(vhost)
    infra_mod.stop_containers()


@pytest.fixture
def infra(infra_found) -> infra_mod.Infra:
    """Real RabbitMQ + PostgreSQL, or a skip (a failure under GUANGMANG_REQUIRE_SERVICES=1)."""
    return infra_mod.require_or_skip(*infra_found)


def pytest_report_header(config):
    return "integration/e2e infrastructure: RABBITMQ_URL/DATABASE_URL, else testcontainers, else local ports"

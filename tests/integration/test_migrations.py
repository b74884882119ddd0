"""Every service's Alembic migrations run on PostgreSQL and SQLite and match its models."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from system.registry import SERVICES

pytestmark = pytest.mark.integration


def _diff(url: str, metadata) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("entry", SERVICES, ids=[e.name for e in SERVICES])
def test_migrations_build_the_models_schema_on_postgresql(entry, infra):
    url = infra.database(f"mig_{entry.name}")
    try:
        entry.migrate.main(url)
        entry.migrate.main(url)  # a second upgrade is a no-op
        assert _diff(url, entry.metadata) == []
        assert "alembic_version" in inspect(create_engine(url)).get_table_names()
    finally:
        infra.drop_database(url)


@pytest.mark.parametrize("entry", SERVICES, ids=[e.name for e in SERVICES])
def test_migrations_build_the_models_schema_on_sqlite(entry, tmp_path):
    url = f"sqlite:///{tmp_path / (entry.name + '.db')}"
    entry.migrate.main(url)
    assert _diff(url, entry.metadata) == []

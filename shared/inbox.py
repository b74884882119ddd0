"""The inbox: ``(handler, event_id)`` recorded in the same transaction as a handler's effect.

A second delivery of the same event to the same handler finds the row and does nothing. The
primary key, not a read-then-write, decides: two concurrent deliveries cannot both apply.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Column, MetaData, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.db import UtcDateTime


def inbox_table(metadata: MetaData) -> Table:
    """Define the ``inbox`` table on a service's metadata."""
    return Table(
        "inbox",
        metadata,
        Column("handler", String(120), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("event_type", String(120), nullable=False),
        Column("processed_at", UtcDateTime, nullable=False),
    )


def claim(session: Session, table: Table, handler: str, event_id: str, event_type: str) -> bool:
    """Record that ``handler`` is applying ``event_id``; False if it already was (a duplicate).

    On PostgreSQL a concurrent claim of the same key waits for the first transaction and then
    sees the conflict, so exactly one of them applies the effect.
    """
    dialect = session.get_bind().dialect.name
    values = dict(handler=handler, event_id=event_id, event_type=event_type,
                  processed_at=datetime.now(timezone.utc))
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two dialects above are supported
        raise RuntimeError(f"inbox does not support {dialect}")
    # RETURNING, not rowcount: drivers disagree on rowcount for INSERT .. ON CONFLICT DO NOTHING.
    return session.execute(stmt.returning(table.c.event_id)).first() is not None

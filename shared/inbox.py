"""The inbox: ``(handler, event_id)`` recorded in the same transaction as a handler's effect.

A second delivery of the same event to the same handler finds the row and does nothing. The
primary key, not a read-then-write, decides: two concurrent deliveries cannot both apply.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable

from sqlalchemy import Column, MetaData, String, Table, delete
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


def _insert_ignoring_duplicates(session: Session, table: Table):  # noqa: ANN202
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"inbox does not support {dialect}")  # pragma: no cover


def claim_many(session: Session, table: Table, handler: str, events: Iterable[tuple[str, str]]) -> set[str]:
    """Claim several ``(event_id, event_type)`` at once; returns the ids claimed now (the rest,
    already in the inbox, are duplicates). One statement, in the caller's transaction."""
    now = datetime.now(timezone.utc)
    rows = {event_id: dict(handler=handler, event_id=event_id, event_type=event_type, processed_at=now)
            for event_id, event_type in events}
    if not rows:
        return set()
    stmt = _insert_ignoring_duplicates(session, table).values(list(rows.values())).on_conflict_do_nothing()
    return set(session.execute(stmt.returning(table.c.event_id)).scalars())


def claim(session: Session, table: Table, handler: str, event_id: str, event_type: str) -> bool:
    """Record that ``handler`` is applying ``event_id``; False if it already was (a duplicate).

    On PostgreSQL a concurrent claim of the same key waits for the first transaction and then
    sees the conflict, so exactly one of them applies the effect.
    """
    # RETURNING, not rowcount: drivers disagree on rowcount for INSERT .. ON CONFLICT DO NOTHING.
    return claim_many(session, table, handler, [(event_id, event_type)]) == {event_id}


#: Kept well beyond the outbox retention, so any event still publishable is still recognised.
INBOX_RETENTION = timedelta(days=30)


def prune(session: Session, table: Table, now: datetime | None = None,
          retention: timedelta = INBOX_RETENTION) -> int:
    """Delete inbox rows older than ``retention`` (in the caller's transaction); returns how many."""
    cutoff = (now or datetime.now(timezone.utc)) - retention
    return session.execute(delete(table).where(table.c.processed_at < cutoff)).rowcount

"""The transactional outbox and its relay.

A service never publishes inside a request: it calls :func:`enqueue` in the same transaction as
its state change. The :class:`OutboxRelay` (in the worker process) claims unpublished rows in
batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so relays can run side by side), publishes
each with confirms and mandatory routing, and marks them in the same transaction. A relay that
dies between publishing and marking leaves the rows unmarked; they are published again and the
consumers' inbox drops the duplicate. A row the broker refuses stays unpublished and is retried
with backoff, its error recorded.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import (Column, Index, Integer, MetaData, String, Table, Text, delete, func,
                        or_, select, update)
from sqlalchemy.orm import Session, sessionmaker

from shared import metrics
from shared.bus import EventPublisher, Outgoing, declare_event_log, keepalive
from shared.db import BigId, UtcDateTime
from shared.events import Event

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    """Define the ``outbox`` table on a service's metadata."""
    table = Table(
        "outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("event_type", String(120), nullable=False),
        Column("routing_key", String(120), nullable=False),
        Column("subject", String(120), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("published_at", UtcDateTime, nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", UtcDateTime, nullable=True),
        Column("last_error", Text, nullable=True),
    )
    Index("ix_outbox_unpublished", table.c.id,
          postgresql_where=table.c.published_at.is_(None),
          sqlite_where=table.c.published_at.is_(None))
    return table


def enqueue(session: Session, table: Table, *events: Event) -> None:
    """Write ``events`` to the outbox inside the caller's transaction (no commit here)."""
    now = datetime.now(timezone.utc)
    rows = [dict(event_id=e.id, event_type=e.type, routing_key=e.routing_key, subject=e.subject,
                 payload=e.to_json(), created_at=now, attempts=0) for e in events]
    if rows:
        # parameters, not .values(): one cached compiled statement; a single row is a plain INSERT
        session.execute(table.insert(), rows[0] if len(rows) == 1 else rows)


def backlog(session: Session, table: Table) -> tuple[int, float]:
    """(unpublished rows, age in seconds of the oldest of them)."""
    count, oldest = session.execute(
        select(func.count(), func.min(table.c.created_at)).where(table.c.published_at.is_(None))).one()
    if oldest is None:
        return int(count), 0.0
    if oldest.tzinfo is None:  # SQLite hands back naive datetimes
        oldest = oldest.replace(tzinfo=timezone.utc)
    return int(count), max(0.0, (datetime.now(timezone.utc) - oldest).total_seconds())


def replay_all(session_factory: sessionmaker[Session], table: Table) -> int:
    """Mark every outbox row unpublished again (embedded mode, after a restart).

    The in-memory broker loses what it held when the process died; publishing the outbox again
    is safe because every consumer drops what its inbox has already seen.
    """
    with session_factory() as session:
        result = session.execute(update(table).where(table.c.published_at.is_not(None))
                                 .values(published_at=None, next_attempt_at=None))
        session.commit()
        return result.rowcount


class OutboxRelay:
    """Moves outbox rows to the bus; see the module docstring for the guarantees."""

    def __init__(self, session_factory: sessionmaker[Session], table: Table, *, service: str,
                 batch_size: int = 200, after_publish: Callable[[str], None] | None = None,
                 retention: timedelta = timedelta(days=7)) -> None:
        self.session_factory = session_factory
        self.table = table
        self.service = service
        self.batch_size = batch_size
        self.retention = retention
        # Test seam: called with each event id after the broker confirmed its batch, before marking.
        self.after_publish = after_publish

    def publish_batch(self, publisher: EventPublisher) -> int:
        """Claim, publish and mark one batch; returns how many rows were claimed."""
        t = self.table
        now = datetime.now(timezone.utc)
        with self.session_factory() as session:
            rows = session.execute(
                select(t.c.id, t.c.event_id, t.c.routing_key, t.c.payload, t.c.attempts)
                .where(t.c.published_at.is_(None))
                .where(or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now))
                .order_by(t.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            # One pipelined round of confirms for the whole batch, still inside the row locks.
            refused = publisher.publish_many(
                [Outgoing(row.routing_key, row.payload, row.event_id) for row in rows]) if rows else {}
            published: list[int] = []
            for row in rows:
                if row.event_id in refused:
                    metrics.PUBLISH_FAILURES.labels(self.service, row.routing_key).inc()
                    delay = min(2 ** row.attempts, 300)
                    session.execute(update(t).where(t.c.id == row.id).values(
                        attempts=row.attempts + 1, last_error=refused[row.event_id][:2000],
                        next_attempt_at=now + timedelta(seconds=delay)))
                    log.error("outbox row %s (%s) refused: %s; retry in %ss",
                              row.id, row.routing_key, refused[row.event_id], delay)
                    continue
                if self.after_publish:
                    self.after_publish(row.event_id)
                published.append(row.id)
                metrics.EVENTS_PUBLISHED.labels(self.service, row.routing_key).inc()
            if published:
                session.execute(update(t).where(t.c.id.in_(published)).values(
                    published_at=datetime.now(timezone.utc), last_error=None))
            session.commit()
            return len(rows)

    def prune(self, now: datetime | None = None) -> int:
        """Delete rows published longer ago than the retention; returns how many.

        Unpublished rows are never pruned. Consumers keep their inbox longer than this (see
        :func:`shared.inbox.prune`), so a replay of what is left is still recognised.
        """
        cutoff = (now or datetime.now(timezone.utc)) - self.retention
        with self.session_factory() as session:
            deleted = session.execute(delete(self.table).where(
                self.table.c.published_at.is_not(None), self.table.c.published_at < cutoff)).rowcount
            session.commit()
        return deleted

    def refresh_metrics(self) -> None:
        """Update the backlog and oldest-age gauges of this service's outbox."""
        with self.session_factory() as session:
            count, age = backlog(session, self.table)
        metrics.OUTBOX_BACKLOG.labels(self.service).set(count)
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(age)

    def run(self, connect: Callable[[], "object"], stop: threading.Event, *, idle_seconds: float = 0.05) -> None:
        """Relay until ``stop`` is set, reconnecting to the broker with backoff."""
        backoff = 0.5
        last_metrics = 0.0
        last_prune = 0.0
        while not stop.is_set():
            try:
                with connect() as conn:
                    conn.ensure_connection(max_retries=3)
                    declare_event_log(conn)  # every event is routable to at least the event log
                    publisher = EventPublisher(conn)
                    log.info("relay connected", extra={"handler": f"{self.service}.relay"})
                    backoff = 0.5
                    while not stop.is_set():
                        claimed = self.publish_batch(publisher)
                        if time.monotonic() - last_metrics > 2.0:
                            self.refresh_metrics()
                            last_metrics = time.monotonic()
                        if time.monotonic() - last_prune > 600:
                            pruned = self.prune()
                            if pruned:
                                log.info("pruned %d published outbox rows", pruned)
                            last_prune = time.monotonic()
                        if claimed < self.batch_size:
                            keepalive(conn)
                            stop.wait(idle_seconds)
            except Exception:  # noqa: BLE001 - the relay must outlive broker and database outages
                log.exception("relay failed; reconnecting in %.1fs", backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

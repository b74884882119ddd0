"""Housekeeping: published outbox rows and old inbox rows are pruned; nothing pending is."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update

from shared import inbox
from shared.db import make_engine, make_session_factory
from shared.outbox import OutboxRelay
from tests.support import bus_harness as h


def test_published_rows_past_the_retention_are_pruned_and_pending_rows_never(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    h.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    h.produce(sessions, "svc", 4)
    now = datetime.now(timezone.utc)
    with sessions() as session:
        ids = [r for (r,) in session.execute(select(h.outbox.c.id).order_by(h.outbox.c.id))]
        session.execute(update(h.outbox).where(h.outbox.c.id.in_(ids[:2])).values(published_at=now - timedelta(days=8)))
        session.execute(update(h.outbox).where(h.outbox.c.id == ids[2]).values(published_at=now - timedelta(days=1)))
        session.commit()  # ids[3] stays unpublished
    relay = OutboxRelay(sessions, h.outbox, service="svc", retention=timedelta(days=7))
    assert relay.prune(now) == 2
    with sessions() as session:
        left = [r for (r,) in session.execute(select(h.outbox.c.id).order_by(h.outbox.c.id))]
    assert left == ids[2:]
    assert relay.prune(now + timedelta(days=365)) == 1  # the unpublished row survives any age
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(h.outbox)).scalar_one() == 1


def test_inbox_rows_older_than_the_retention_are_pruned(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'i.db'}")
    h.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        inbox.claim(session, h.inbox, "svc.apply", "old", "t")
        inbox.claim(session, h.inbox, "svc.apply", "new", "t")
        session.execute(update(h.inbox).where(h.inbox.c.event_id == "old")
                        .values(processed_at=datetime.now(timezone.utc) - timedelta(days=31)))
        session.commit()
    with sessions() as session:
        assert inbox.prune(session, h.inbox) == 1
        session.commit()
        assert [r for (r,) in session.execute(select(h.inbox.c.event_id))] == ["new"]
    assert inbox.INBOX_RETENTION > OutboxRelay(sessions, h.outbox, service="svc").retention

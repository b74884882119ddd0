"""A tiny producer/consumer pair on the real bus, for the reliability tests and the benchmark.

The producer writes a business row (``orders``) and its event to the outbox in one transaction.
The consumer's effect inserts into ``effects`` with NO unique key of its own, so an event applied
twice would show up as two rows: only the inbox stands between a redelivery and a double effect.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Column, DateTime, Integer, String, Table, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.consumer import Handler
from shared.db import BigId, make_metadata
from shared.events import Event, new_event
from shared.inbox import inbox_table
from shared.outbox import enqueue, outbox_table

metadata = make_metadata()
orders = Table("orders", metadata,
               Column("id", String(36), primary_key=True),
               Column("seq", Integer, nullable=False),
               Column("created_at", DateTime(timezone=True), nullable=False))
effects = Table("effects", metadata,
                Column("id", BigId, primary_key=True, autoincrement=True),
                Column("order_id", String(36), nullable=False),
                Column("event_id", String(64), nullable=False))
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

EVENT = "user.registered"


def order_event(service: str, order_id: str, seq: int) -> Event:
    return new_event(EVENT, {"user_id": order_id, "display_name": f"order {seq}", "role": "resident",
                             "registered_at": datetime.now(timezone.utc)},
                     service=service, subject=order_id, sequence=1)


def produce(sessions: sessionmaker[Session], service: str, count: int, start: int = 0) -> list[str]:
    """Write ``count`` business rows, each with its event, one committed transaction each."""
    ids = []
    for seq in range(start, start + count):
        order_id = str(uuid.uuid4())
        with sessions() as session:
            session.execute(orders.insert(), {"id": order_id, "seq": seq, "created_at": datetime.now(timezone.utc)})
            enqueue(session, outbox, order_event(service, order_id, seq))
            session.commit()
        ids.append(order_id)
    return ids


def apply_effect(session: Session, event: Event) -> None:
    session.execute(effects.insert(), {"order_id": str(event.data["user_id"]), "event_id": event.id})


def handler(name: str = "apply", fail_for: Callable[[Event], bool] | None = None) -> Handler:
    def fn(session: Session, event: Event) -> None:
        if fail_for and fail_for(event):
            raise RuntimeError(f"poison: cannot apply {event.data['display_name']}")
        apply_effect(session, event)
    return Handler(name, (EVENT,), fn)


def effect_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(effects.c.order_id, func.count()).group_by(effects.c.order_id)).all())


def unpublished(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))).scalar_one()

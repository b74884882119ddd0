"""The correlation context of the work in progress (an HTTP request or an event being handled).

It travels from an HTTP request into the events written to the outbox, and from a consumed
event into the events its handler writes (as ``causationid``), and into every log line.
"""
from __future__ import annotations

import contextlib
import contextvars
import uuid
from typing import Iterator

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
causation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("causation_id", default=None)


def current_correlation_id() -> str:
    """The correlation id in force, or a fresh one if nothing set it."""
    return correlation_id.get() or str(uuid.uuid4())


@contextlib.contextmanager
def correlated(corr_id: str | None, cause_id: str | None = None) -> Iterator[None]:
    """Run a block with the given correlation and causation ids in force."""
    t1 = correlation_id.set(corr_id or str(uuid.uuid4()))
    t2 = causation_id.set(cause_id)
    try:
        yield
    finally:
        correlation_id.reset(t1)
        causation_id.reset(t2)

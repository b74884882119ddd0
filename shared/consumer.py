"""Consuming events: the inbox-guarded handler and the consumer runner.

At-least-once delivery, applied exactly once:

1. the runner takes what has arrived (up to a batch) and decodes it (an undecodable message is
   dead-lettered at once);
2. :class:`InboxHandler` opens one transaction, claims every ``(handler, event id)`` in the inbox
   and runs the domain handler for each event it claimed, then commits;
3. only then are the messages acked. A crash before the ack means a redelivery, which the inbox
   turns into a no-op. If the batch's transaction fails, its events are applied one by one, so
   only the failing one is retried.

A database that is down is not the event's fault: the runner reconnects with backoff and the
unacked messages are delivered again, spending no retry. A handler that raises is retried after
each of the configured delays (a per-delay retry queue
with a TTL that dead-letters back to the main queue) and, after the last, parked in
``<queue>.dlq`` with the error in a header. Nothing is dropped silently and nothing is requeued in
a tight loop; other handlers have their own queues and keep flowing.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from kombu import Connection, Consumer
from sqlalchemy import Table
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared import inbox, metrics
from shared.bus import (ATTEMPT_HEADER, ERROR_HEADER, EventPublisher, Subscription, keepalive,
                        dead_letter_queue_name, declare_topology, main_queue, retry_queue_name,
                        supports_broker_retries)
from shared.context import correlated
from shared.events import Event, decode

log = logging.getLogger(__name__)

HandlerFn = Callable[[Session, Event], None]

#: Failures of the database itself (unreachable, restarted, locked, serialization conflicts): the
#: runner reconnects with backoff and the unacked messages come again, without spending retries.
INFRASTRUCTURE_ERRORS = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Handler:
    """A service's event handler: a name (its queue is ``<service>.<name>``), the event names it
    consumes, and the function applying one event inside a transaction."""

    name: str
    events: tuple[str, ...]
    fn: HandlerFn

    def subscription(self, service: str) -> Subscription:
        return Subscription(service=service, handler=self.name, events=self.events)


class InboxHandler:
    """Applies events at most once per handler: inbox claim + effect + commit, together."""

    def __init__(self, session_factory: sessionmaker[Session], inbox_table: Table, queue: str,
                 fn: HandlerFn) -> None:
        self.session_factory = session_factory
        self.inbox_table = inbox_table
        self.queue = queue
        self.fn = fn

    def apply_many(self, events: Sequence[Event]) -> list[bool]:
        """Apply ``events`` in one transaction; for each, False if it was a duplicate."""
        with self.session_factory() as session:
            claimed = inbox.claim_many(session, self.inbox_table, self.queue, [(e.id, e.type) for e in events])
            applied = []
            for event in events:
                fresh = event.id in claimed
                claimed.discard(event.id)  # the same event twice in one batch: the second is a duplicate
                if fresh:
                    with correlated(event.correlationid, event.id):
                        self.fn(session, event)
                applied.append(fresh)
            session.commit()
            return applied

    def __call__(self, event: Event) -> bool:
        """Apply one event; False when it was a duplicate and nothing was done."""
        return self.apply_many([event])[0]


class ConsumerRunner:
    """Consumes one handler's queue until ``stop`` is set.

    It consumes on one connection and publishes retries and dead letters on a second one (waiting
    for a publish confirm must not dispatch deliveries). Reconnects with backoff, keeps heartbeats
    while idle, finishes the batch in hand and leaves cleanly when stopped (unacked prefetched
    messages go back to the broker).
    """

    def __init__(self, connect: Callable[[], Connection], subscription: Subscription,
                 apply: InboxHandler, *, retry_delays: Sequence[float], stop: threading.Event,
                 prefetch: int = 50, batch_size: int | None = None,
                 after_commit: Callable[[Event], None] | None = None) -> None:
        self.connect = connect
        self.subscription = subscription
        self.apply = apply
        self.retry_delays = tuple(retry_delays)
        self.stop = stop
        self.prefetch = prefetch
        self.batch_size = max(1, min(batch_size or prefetch, prefetch))
        # Test seam: called for each event after its effect committed and before its ack.
        self.after_commit = after_commit
        self._publisher: EventPublisher | None = None
        self._broker_retries = True
        self._pending: list = []
        self.ready = threading.Event()

    @property
    def queue(self) -> str:
        return self.subscription.queue

    def run(self) -> None:
        """Consume until ``stop`` is set (blocking; run it in its own thread)."""
        backoff = 0.5
        while not self.stop.is_set():
            try:
                with self.connect() as conn, self.connect() as publishing:
                    conn.ensure_connection(max_retries=3)
                    publishing.ensure_connection(max_retries=3)
                    declare_topology(conn, [self.subscription], self.retry_delays)
                    self._broker_retries = supports_broker_retries(conn)
                    self._publisher = EventPublisher(publishing)
                    with Consumer(conn.channel(), queues=[main_queue(self.subscription)],
                                  on_message=self._receive, prefetch_count=self.prefetch):
                        self.ready.set()
                        log.info("consuming", extra={"queue": self.queue})
                        backoff = 0.5
                        last_beat = time.monotonic()
                        while not self.stop.is_set():
                            try:
                                conn.drain_events(timeout=1)
                                self._take_what_arrived(conn)
                                self._flush()
                            except (socket.timeout, TimeoutError):
                                pass
                            if time.monotonic() - last_beat >= 2:  # busy or idle, both connections
                                conn.heartbeat_check()
                                keepalive(publishing)
                                last_beat = time.monotonic()
            except Exception:  # noqa: BLE001 - reconnect on any broker or database failure
                if self.stop.is_set():
                    break
                log.exception("consumer failed; reconnecting in %.1fs", backoff, extra={"queue": self.queue})
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                self._requeue(self._pending)
                self._pending = []
                self.ready.clear()
                self._publisher = None

    def _receive(self, message) -> None:  # noqa: ANN001 - kombu Message
        self._pending.append(message)

    def _take_what_arrived(self, conn: Connection) -> None:
        while len(self._pending) < self.batch_size:
            try:
                conn.drain_events(timeout=0)
            except (socket.timeout, TimeoutError):
                return

    def _requeue(self, messages: list) -> None:
        """Hand back what was received but not acked. RabbitMQ would redeliver it anyway when the
        connection closes; kombu's in-memory transport would drop it, so say it explicitly."""
        for message in messages:
            if message.acknowledged:
                continue
            try:
                message.reject(requeue=True)
            except Exception:  # noqa: BLE001 - a dead connection: the broker requeues by itself
                log.debug("requeue failed", exc_info=True)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            self._apply_batch(batch)
        except BaseException:
            self._requeue(batch)
            raise

    def _apply_batch(self, batch: list) -> None:
        decoded = []
        for message in batch:
            try:
                decoded.append((message, decode(message.body)))
            except Exception as exc:  # noqa: BLE001 - whatever cannot be decoded is parked, never redelivered
                log.error("undecodable message dead-lettered: %s", exc, extra={"queue": self.queue})
                self._park(message.body, dict(message.headers or {}),
                           message.properties.get("message_id") or "unknown", str(exc))
        outcomes: list[bool | None] = []
        if decoded:
            try:
                outcomes = list(self.apply.apply_many([event for _, event in decoded]))
            except INFRASTRUCTURE_ERRORS:
                raise  # the database, not the event: reconnect and get the batch again, spend no retry
            except Exception as exc:  # noqa: BLE001 - one event spoiled the transaction: apply one by one
                if len(decoded) == 1:
                    message, event = decoded[0]
                    self._retry_or_park(message.body, dict(message.headers or {}), event, exc)
                    outcomes = [None]
                else:
                    outcomes = [self._apply_one(message, event) for message, event in decoded]
        for (_message, event), outcome in zip(decoded, outcomes):
            if outcome is None:
                continue  # sent to a retry queue or parked
            metrics.EVENTS_CONSUMED.labels(self.queue, "applied" if outcome else "duplicate").inc()
            if self.after_commit:
                self.after_commit(event)
        for message in batch:  # per message: the in-memory transport ignores ack(multiple=True)
            message.ack()

    def _apply_one(self, message, event: Event) -> bool | None:  # noqa: ANN001
        try:
            return self.apply(event)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then parked
            self._retry_or_park(message.body, dict(message.headers or {}), event, exc)
            return None

    def _retry_or_park(self, body, headers: dict, event: Event, exc: Exception) -> None:  # noqa: ANN001
        attempt = int(headers.get(ATTEMPT_HEADER, 0))
        extra = {"queue": self.queue, "event_id": event.id, "event_type": event.type}
        error = f"{type(exc).__name__}: {exc}"[:1000]
        if attempt >= len(self.retry_delays):
            log.error("handler failed after %d retries; dead-lettered: %s", attempt, error, extra=extra)
            self._park(body, headers, event.id, error)
            return
        delay = self.retry_delays[attempt]
        log.warning("handler failed (attempt %d), retry in %.1fs: %s", attempt + 1, delay, error, extra=extra)
        headers = {**headers, ATTEMPT_HEADER: attempt + 1, ERROR_HEADER: error}
        assert self._publisher is not None
        if self._broker_retries:
            self._publisher.publish_to_queue(retry_queue_name(self.queue, delay), body,
                                             message_id=event.id, headers=headers)
        else:
            # In-memory transport: no TTL queues, so this handler's thread waits out the delay.
            self.stop.wait(delay)
            self._publisher.publish_to_queue(self.queue, body, message_id=event.id, headers=headers)
        metrics.EVENTS_CONSUMED.labels(self.queue, "retried").inc()

    def _park(self, body, headers: dict, message_id: str, error: str) -> None:  # noqa: ANN001
        assert self._publisher is not None
        self._publisher.publish_to_queue(dead_letter_queue_name(self.queue), body, message_id=message_id,
                                         headers={**headers, ERROR_HEADER: error})
        metrics.EVENTS_CONSUMED.labels(self.queue, "dead_lettered").inc()

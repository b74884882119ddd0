"""The kombu bus: topology, connections and the confirming publisher.

Topology (declared idempotently at start, mirrored in ``deploy/rabbitmq/definitions.json``):

- one durable topic exchange ``guangmang.events``; routing key = event name;
- per consuming handler a durable queue ``<service>.<handler>`` bound to its event names;
- per handler and retry delay a queue ``<queue>.retry.<ms>`` whose messages expire after the
  delay and are dead-lettered back to ``<queue>`` (bounded delayed retries);
- per handler a dead-letter queue ``<queue>.dlq`` where a message lands after the last retry;
- one durable **stream** ``guangmang.events.log`` bound to every event (``#``), kept 30 days: the
  record the city-level platform reads (and re-reads from any offset to catch up after downtime),
  and the reason an event without a consuming handler is still routable. A publish the broker
  returns as unroutable therefore means broken topology: the outbox keeps the row and retries.

kombu's in-memory transport (the embedded mode) has no TTL or dead-lettering; the consumer
then waits out the delay itself (see :mod:`shared.consumer`).
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from kombu import Connection, Exchange, Producer, Queue, binding

from shared.events import CONTENT_TYPE

log = logging.getLogger(__name__)

EXCHANGE_NAME = "guangmang.events"
EVENT_LOG = "guangmang.events.log"
EVENT_LOG_ARGUMENTS = {"x-queue-type": "stream", "x-max-age": "30D", "x-max-length-bytes": 20_000_000_000}
ATTEMPT_HEADER = "x-guangmang-attempt"
ERROR_HEADER = "x-guangmang-error"


class PublishError(RuntimeError):
    """The broker did not take a message (unroutable or negatively confirmed)."""


class Unroutable(PublishError):
    """A mandatory publish matched no queue; the broker returned it."""


def events_exchange() -> Exchange:
    """The durable topic exchange every integration event is published to."""
    return Exchange(EXCHANGE_NAME, type="topic", durable=True)


@dataclass(frozen=True)
class Subscription:
    """One consuming handler: its service, its name and the event names it binds."""

    service: str
    handler: str
    events: tuple[str, ...]

    @property
    def queue(self) -> str:
        return f"{self.service}.{self.handler}"


def retry_queue_name(queue: str, delay: float) -> str:
    """Name of the retry queue of ``queue`` for one delay (the delay is part of the contract)."""
    return f"{queue}.retry.{int(round(delay * 1000))}"


def dead_letter_queue_name(queue: str) -> str:
    """Name of the queue where ``queue``'s messages land after their last retry."""
    return f"{queue}.dlq"


def main_queue(sub: Subscription) -> Queue:
    """The durable queue of a subscription, bound to the events exchange per event name."""
    exchange = events_exchange()
    return Queue(
        sub.queue,
        bindings=[binding(exchange, routing_key=name) for name in sub.events],
        durable=True,
        auto_delete=False,
    )


def queues_for(sub: Subscription, retry_delays: Iterable[float]) -> list[Queue]:
    """Every queue a subscription needs: main, one per retry delay, and the dead-letter queue."""
    queues = [main_queue(sub)]
    for delay in retry_delays:
        name = retry_queue_name(sub.queue, delay)
        queues.append(Queue(name, routing_key=name, durable=True, auto_delete=False, queue_arguments={
            "x-message-ttl": int(round(delay * 1000)),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": sub.queue,
        }))
    dlq = dead_letter_queue_name(sub.queue)
    queues.append(Queue(dlq, routing_key=dlq, durable=True, auto_delete=False))
    return queues


def declare_topology(connection: Connection, subscriptions: Iterable[Subscription],
                     retry_delays: Iterable[float]) -> None:
    """Declare the exchange and every queue of ``subscriptions`` (safe to repeat)."""
    delays = tuple(retry_delays)
    channel = connection.channel()
    try:
        events_exchange()(channel).declare()
        for sub in subscriptions:
            for queue in queues_for(sub, delays):
                queue(channel).declare()
    finally:
        channel.close()


def event_log_queue() -> Queue:
    """The stream every event is also routed to (see the module docstring)."""
    return Queue(EVENT_LOG, exchange=events_exchange(), routing_key="#", durable=True, auto_delete=False,
                 queue_arguments=dict(EVENT_LOG_ARGUMENTS))


def declare_event_log(connection: Connection) -> None:
    """Declare the exchange and the event-log stream (RabbitMQ only: kombu's in-memory transport
    has no streams, and silently drops what nothing consumes)."""
    if not supports_broker_retries(connection):
        return
    channel = connection.channel()
    try:
        events_exchange()(channel).declare()
        event_log_queue()(channel).declare()
    finally:
        channel.close()


def connect(url: str, *, heartbeat: int = 30) -> Connection:
    """A kombu connection with heartbeats (not yet connected); confirms are the publisher's job.

    One connection per thread: py-amqp connections are not thread-safe.
    """
    return Connection(
        url,
        heartbeat=heartbeat,
        connect_timeout=5,
        # polling_interval only affects the in-memory transport (embedded mode): poll briskly.
        transport_options={"max_retries": 1, "polling_interval": 0.02},
    )


def supports_broker_retries(connection: Connection) -> bool:
    """True when the transport honours per-queue TTL and dead-lettering (real AMQP)."""
    return connection.transport.driver_type == "amqp"


def keepalive(connection: Connection) -> None:
    """Read what the broker sent (heartbeats) and send ours: for a connection that is not consuming."""
    try:
        connection.drain_events(timeout=0)
    except (socket.timeout, TimeoutError):
        pass
    connection.heartbeat_check()


@dataclass(frozen=True)
class Outgoing:
    """One message for :meth:`EventPublisher.publish_many`."""

    routing_key: str
    body: str | bytes
    message_id: str
    headers: dict | None = None
    exchange: str = EXCHANGE_NAME


class EventPublisher:
    """Publishes serialized events: persistent, mandatory, and confirmed by the broker.

    Confirms are pipelined: a batch is published without waiting message by message, then the
    publisher waits once until the broker confirmed (or refused) every message of it. An
    unroutable message comes back as a ``basic.return`` before its confirm, so refusals are
    attributed exactly. Give the publisher a connection of its own: waiting for confirms reads the
    connection, and must not dispatch deliveries of a consumer sharing it.
    """

    def __init__(self, connection: Connection, *, confirm_timeout: float = 30.0) -> None:
        self._connection = connection
        self._channel = connection.channel()
        self._confirms = supports_broker_retries(connection)  # the in-memory transport has none
        self._timeout = confirm_timeout
        self._seq = 0
        self._unconfirmed: dict[int, str] = {}
        self._failed: dict[str, str] = {}
        if self._confirms:
            self._channel.confirm_select()
            self._channel.events["basic_ack"].add(self._on_ack)
            self._channel.events["basic_nack"].add(self._on_nack)
        self._producer = Producer(self._channel, exchange=events_exchange(), on_return=self._on_return)

    def _settle(self, tag: int, multiple: bool, error: str | None) -> None:
        tags = [t for t in self._unconfirmed if t <= tag] if multiple else [tag]
        for t in tags:
            message_id = self._unconfirmed.pop(t, None)
            if error and message_id is not None:
                self._failed.setdefault(message_id, error)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, "the broker refused the message (nack)")

    def _on_return(self, exception, exchange, routing_key, message) -> None:  # noqa: ANN001
        message_id = (getattr(message, "properties", None) or {}).get("message_id")
        log.warning("broker returned %s (%s): %s", routing_key, message_id, exception)
        self._failed[message_id] = f"unroutable: no queue is bound to {routing_key!r}"

    def publish_many(self, messages: Sequence[Outgoing]) -> dict[str, str]:
        """Publish ``messages`` and wait for every confirm; returns ``{message_id: error}`` of the
        refused ones (unroutable or nacked). Raises :class:`PublishError` if confirms time out."""
        self._failed = {}
        for msg in messages:
            if self._confirms:
                self._seq += 1
                self._unconfirmed[self._seq] = msg.message_id
            # kombu reads exchange="" as "the producer's default": the default exchange needs an object.
            exchange = Exchange("") if msg.exchange == "" else msg.exchange
            self._producer.publish(
                msg.body, exchange=exchange, routing_key=msg.routing_key, content_type=CONTENT_TYPE,
                content_encoding="utf-8", delivery_mode=2, mandatory=True, message_id=msg.message_id,
                headers=msg.headers or {}, retry=False)
        deadline = time.monotonic() + self._timeout
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError(f"{len(self._unconfirmed)} messages unconfirmed after {self._timeout}s")
            try:
                self._connection.drain_events(timeout=remaining)
            except (socket.timeout, TimeoutError):
                continue
        failed, self._failed = self._failed, {}
        return failed

    def publish(self, routing_key: str, body: str | bytes, *, message_id: str,
                headers: dict | None = None, exchange: str = EXCHANGE_NAME) -> None:
        """Publish one message and wait for its confirm; :class:`Unroutable` if nothing took it."""
        failed = self.publish_many([Outgoing(routing_key, body, message_id, headers, exchange)])
        if message_id in failed:
            error = failed[message_id]
            raise (Unroutable if error.startswith("unroutable") else PublishError)(error)

    def publish_to_queue(self, queue: str, body: str | bytes, *, message_id: str, headers: dict) -> None:
        """Publish straight to one queue through the default exchange (retries, dead letters)."""
        self.publish(queue, body, message_id=message_id, headers=headers, exchange="")

    def close(self) -> None:
        try:
            self._channel.close()
        except Exception:  # noqa: BLE001 - closing a dead channel must not mask the real error
            log.debug("channel close failed", exc_info=True)

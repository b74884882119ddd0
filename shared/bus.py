"""The kombu bus: topology, connections and the confirming publisher.

Topology (declared idempotently at start, mirrored in ``deploy/rabbitmq/definitions.json``):

- one durable topic exchange ``guangmang.events``; routing key = event name;
- per consuming handler a durable queue ``<service>.<handler>`` bound to its event names;
- per handler and retry delay a queue ``<queue>.retry.<ms>`` whose messages expire after the
  delay and are dead-lettered back to ``<queue>`` (bounded delayed retries);
- per handler a dead-letter queue ``<queue>.dlq`` where a message lands after the last retry.

kombu's in-memory transport (the embedded mode) has no TTL or dead-lettering; the consumer
then waits out the delay itself (see :mod:`shared.consumer`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from kombu import Connection, Exchange, Producer, Queue, binding

from shared.events import CONTENT_TYPE

log = logging.getLogger(__name__)

EXCHANGE_NAME = "guangmang.events"
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
    return f"{queue}.dlq"


def main_queue(sub: Subscription) -> Queue:
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


def connect(url: str, *, heartbeat: int = 30) -> Connection:
    """A kombu connection with publisher confirms and heartbeats (not yet connected).

    One connection per thread: py-amqp connections are not thread-safe.
    """
    return Connection(
        url,
        heartbeat=heartbeat,
        connect_timeout=5,
        # polling_interval only affects the in-memory transport (embedded mode): poll briskly.
        transport_options={"confirm_publish": True, "max_retries": 1, "polling_interval": 0.02},
    )


def supports_broker_retries(connection: Connection) -> bool:
    """True when the transport honours per-queue TTL and dead-lettering (real AMQP)."""
    return connection.transport.driver_type == "amqp"


class EventPublisher:
    """Publishes serialized events: persistent, mandatory, and confirmed by the broker.

    ``publish`` returns only once the broker confirmed the message; it raises
    :class:`Unroutable` if the broker returned it for matching no queue.
    """

    def __init__(self, connection: Connection) -> None:
        self._returned: set[str] = set()
        self._channel = connection.channel()
        self._producer = Producer(self._channel, exchange=events_exchange(), on_return=self._on_return)

    def _on_return(self, exception, exchange, routing_key, message) -> None:  # noqa: ANN001
        message_id = (getattr(message, "properties", None) or {}).get("message_id")
        log.warning("broker returned %s (%s): %s", routing_key, message_id, exception)
        self._returned.add(message_id)

    def publish(self, routing_key: str, body: str, *, message_id: str,
                headers: dict | None = None, exchange: Exchange | str | None = None) -> None:
        """Publish ``body`` (a structured CloudEvent) and wait for the broker's confirm."""
        self._producer.publish(
            body,
            exchange=events_exchange() if exchange is None else exchange,
            routing_key=routing_key,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
            mandatory=True,
            message_id=message_id,
            headers=headers or {},
            retry=False,
        )
        if message_id in self._returned:
            self._returned.discard(message_id)
            raise Unroutable(f"no queue is bound to {routing_key!r}")

    def publish_to_queue(self, queue: str, body: str | bytes, *, message_id: str, headers: dict) -> None:
        """Publish straight to one queue through the default exchange (retries, dead letters)."""
        self.publish(queue, body, message_id=message_id, headers=headers, exchange=Exchange(""))

    def close(self) -> None:
        try:
            self._channel.close()
        except Exception:  # noqa: BLE001 - closing a dead channel must not mask the real error
            log.debug("channel close failed", exc_info=True)

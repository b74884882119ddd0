"""The whole bus in one process: outbox -> relay -> kombu ``memory://`` -> consumer -> inbox.

The same guarantees as ``tests/integration/test_bus_reliability.py``, without a broker: every
event applied exactly once, duplicates dropped by the inbox, a poison message retried a bounded
number of times and then parked, an undecodable message parked at once.

kombu's memory transport keeps its queues in global, process-wide state, so every test uses its
own service name (hence its own queue names).
"""
from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from queue import Empty
from typing import Callable

import pytest
from kombu import Connection
from prometheus_client import REGISTRY

from shared.bus import (ATTEMPT_HEADER, ERROR_HEADER, EventPublisher, dead_letter_queue_name,
                        declare_topology)
from shared.consumer import ConsumerRunner, Handler, InboxHandler
from shared.context import correlated
from shared.db import make_engine, make_session_factory
from shared.events import Event
from shared.outbox import OutboxRelay, replay_all
from tests.support import bus_harness as h
from tests.support.waiting import eventually

TIMEOUT = 20.0


def memory_connection() -> Connection:
    # A short polling interval: the memory transport otherwise sleeps a whole second when idle.
    return Connection("memory://", transport_options={"polling_interval": 0.01})


@dataclass
class MemoryBus:
    service: str
    engine: object
    sessions: object
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def declare(self, handler: Handler, retry_delays=(0.05,)) -> None:  # noqa: ANN001
        with memory_connection() as conn:
            declare_topology(conn, [handler.subscription(self.service)], retry_delays)

    def relay(self) -> OutboxRelay:
        relay = OutboxRelay(self.sessions, h.outbox, service=self.service)
        self._spawn(lambda: relay.run(memory_connection, self.stop, idle_seconds=0.01))
        return relay

    def consumer(self, handler: Handler, retry_delays=(0.05,),  # noqa: ANN001
                 after_commit: Callable[[Event], None] | None = None) -> ConsumerRunner:
        sub = handler.subscription(self.service)
        runner = ConsumerRunner(memory_connection, sub, InboxHandler(self.sessions, h.inbox, sub.queue, handler.fn),
                                retry_delays=retry_delays, stop=self.stop, prefetch=10, after_commit=after_commit)
        self._spawn(runner.run)
        assert runner.ready.wait(TIMEOUT), "consumer did not attach to its queue"
        return runner

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.threads.append(thread)

    def queue(self, handler: Handler) -> str:
        return handler.subscription(self.service).queue

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        assert not any(t.is_alive() for t in self.threads), "a bus thread did not stop"


@pytest.fixture
def bus(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bus.db'}")
    h.metadata.create_all(engine)
    env = MemoryBus(f"mem{uuid.uuid4().hex[:10]}", engine, make_session_factory(engine))
    yield env
    env.close()
    engine.dispose()


def all_once(bus: MemoryBus, ids: list[str]):  # noqa: ANN201
    counts = h.effect_counts(bus.engine)
    return set(counts) == set(ids) and counts


def take_dead_letter(queue: str, timeout: float = TIMEOUT):  # noqa: ANN201
    """The next message parked in ``<queue>.dlq`` (blocks up to ``timeout``), acked."""
    with memory_connection() as conn:
        dlq = conn.SimpleQueue(dead_letter_queue_name(queue))
        try:
            message = dlq.get(timeout=timeout)
            message.ack()
            return message
        finally:
            dlq.close()


def no_dead_letter(queue: str) -> bool:
    with memory_connection() as conn:
        dlq = conn.SimpleQueue(dead_letter_queue_name(queue))
        try:
            dlq.get(block=False)
        except Empty:
            return True
        finally:
            dlq.close()
    return False


def consumed(queue: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("guangmang_events_consumed_total", {"queue": queue, "outcome": outcome}) or 0.0


# ---- the happy path --------------------------------------------------------------------------

def test_every_outbox_row_is_applied_exactly_once(bus: MemoryBus) -> None:
    handler = h.handler()
    bus.declare(handler)
    bus.consumer(handler)
    bus.relay()
    ids = h.produce(bus.sessions, bus.service, 12)
    counts = eventually(lambda: all_once(bus, ids), timeout=TIMEOUT, message="all twelve effects")
    assert set(counts.values()) == {1}
    eventually(lambda: h.unpublished(bus.engine) == 0, timeout=TIMEOUT, message="outbox marked published")
    assert no_dead_letter(bus.queue(handler))


def test_rows_written_while_the_consumer_is_down_arrive_when_it_starts(bus: MemoryBus) -> None:
    handler = h.handler()
    bus.declare(handler)  # the queue exists, so the relay's messages wait in it
    bus.relay()
    ids = h.produce(bus.sessions, bus.service, 5)
    eventually(lambda: h.unpublished(bus.engine) == 0, timeout=TIMEOUT, message="outbox published")
    assert h.effect_counts(bus.engine) == {}
    bus.consumer(handler)
    counts = eventually(lambda: all_once(bus, ids), timeout=TIMEOUT, message="the five effects")
    assert set(counts.values()) == {1}


def test_the_correlation_id_of_the_producer_reaches_the_consumer(bus: MemoryBus) -> None:
    handler = h.handler()
    bus.declare(handler)
    seen: list[Event] = []
    bus.consumer(handler, after_commit=seen.append)
    bus.relay()
    with correlated("corr-from-request"):
        [order_id] = h.produce(bus.sessions, bus.service, 1)
    [event] = eventually(lambda: list(seen), timeout=TIMEOUT, message="the delivery")
    assert str(event.data["user_id"]) == order_id
    assert event.correlationid == "corr-from-request"


# ---- duplicates --------------------------------------------------------------------------------

def test_a_duplicate_publish_of_the_same_event_is_applied_once(bus: MemoryBus) -> None:
    handler = h.handler()
    bus.declare(handler)
    deliveries: list[Event] = []
    bus.consumer(handler, after_commit=deliveries.append)
    [order_id] = h.produce(bus.sessions, bus.service, 1)
    with bus.sessions() as session:
        payload = session.execute(h.outbox.select()).first().payload
    event_id = json.loads(payload)["id"]
    with memory_connection() as conn:
        publisher = EventPublisher(conn)
        publisher.publish(h.EVENT, payload, message_id=event_id)
        publisher.publish(h.EVENT, payload, message_id=event_id)
    eventually(lambda: len(deliveries) == 2, timeout=TIMEOUT, message="both deliveries handled")
    assert [e.id for e in deliveries] == [event_id, event_id]
    assert h.effect_counts(bus.engine) == {order_id: 1}
    queue = bus.queue(handler)
    assert (consumed(queue, "applied"), consumed(queue, "duplicate")) == (1.0, 1.0)


def test_replay_all_marks_published_rows_unpublished_and_the_inbox_drops_the_replays(bus: MemoryBus) -> None:
    handler = h.handler()
    bus.declare(handler)
    deliveries: list[Event] = []
    bus.consumer(handler, after_commit=deliveries.append)
    bus.relay()
    ids = h.produce(bus.sessions, bus.service, 4)
    eventually(lambda: all_once(bus, ids), timeout=TIMEOUT, message="the four effects")
    eventually(lambda: h.unpublished(bus.engine) == 0, timeout=TIMEOUT, message="outbox published")

    bus.stop.set()  # stop the relay, to look at the rows before they go out again
    for thread in bus.threads:
        thread.join(10)
    bus.threads.clear()
    bus.stop.clear()

    assert replay_all(bus.sessions, h.outbox) == 4
    assert h.unpublished(bus.engine) == 4
    assert replay_all(bus.sessions, h.outbox) == 0  # nothing published is left to replay

    deliveries.clear()
    bus.consumer(handler, after_commit=deliveries.append)
    bus.relay()
    eventually(lambda: len(deliveries) == 4, timeout=TIMEOUT, message="the four replays handled")
    eventually(lambda: h.unpublished(bus.engine) == 0, timeout=TIMEOUT, message="outbox published again")
    counts = h.effect_counts(bus.engine)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    assert consumed(bus.queue(handler), "duplicate") == 4.0


# ---- failures ----------------------------------------------------------------------------------

def test_a_poison_message_is_retried_then_dead_lettered_while_others_are_applied(bus: MemoryBus) -> None:
    delays = (0.05, 0.05)
    attempts: list[str] = []

    def poison(event: Event) -> bool:
        if event.data["display_name"] == "order 0":
            attempts.append(event.id)
            return True
        return False

    handler = h.handler(fail_for=poison)
    bus.declare(handler, delays)
    bus.consumer(handler, retry_delays=delays)
    bus.relay()
    ids = h.produce(bus.sessions, bus.service, 6)  # the poison goes first
    queue = bus.queue(handler)

    message = take_dead_letter(queue)
    assert message.headers[ATTEMPT_HEADER] == len(delays)
    assert "RuntimeError" in message.headers[ERROR_HEADER]
    assert "poison" in message.headers[ERROR_HEADER]
    parked = json.loads(message.body)
    assert parked["data"]["user_id"] == ids[0]

    counts = eventually(lambda: all_once(bus, ids[1:]), timeout=TIMEOUT, message="the five healthy effects")
    assert set(counts.values()) == {1}
    assert ids[0] not in h.effect_counts(bus.engine)
    # first try + each retry; a try inside a batch runs twice (the batch, then the event alone)
    assert 1 + len(delays) <= len(attempts) <= 2 * (1 + len(delays)) and len(set(attempts)) == 1
    assert consumed(queue, "retried") == len(delays)
    assert consumed(queue, "dead_lettered") == 1.0
    assert no_dead_letter(queue)  # parked once, not once per attempt


def test_a_handler_that_fails_once_succeeds_on_its_retry(bus: MemoryBus) -> None:
    failures: list[str] = []

    def flaky(event: Event) -> bool:
        if not failures:
            failures.append(event.id)
            return True
        return False

    handler = h.handler(fail_for=flaky)
    bus.declare(handler, (0.05, 0.05))
    bus.consumer(handler, retry_delays=(0.05, 0.05))
    bus.relay()
    [order_id] = h.produce(bus.sessions, bus.service, 1)
    eventually(lambda: h.effect_counts(bus.engine) == {order_id: 1}, timeout=TIMEOUT, message="the retried effect")
    assert len(failures) == 1
    assert no_dead_letter(bus.queue(handler))


def test_an_undecodable_message_is_dead_lettered_at_once_not_retried(bus: MemoryBus) -> None:
    calls: list[str] = []

    def fn(session, event: Event) -> None:  # noqa: ANN001
        calls.append(event.id)
        h.apply_effect(session, event)

    handler = Handler("apply", (h.EVENT,), fn)
    bus.declare(handler, (0.05, 0.05))
    bus.consumer(handler, retry_delays=(0.05, 0.05))
    queue = bus.queue(handler)
    with memory_connection() as conn:
        EventPublisher(conn).publish_to_queue(queue, b"not json", message_id="garbage-1", headers={})

    message = take_dead_letter(queue)
    assert message.body == b"not json"
    assert ATTEMPT_HEADER not in message.headers  # parked on the first delivery
    assert "not JSON" in message.headers[ERROR_HEADER]
    assert message.properties.get("message_id") == "garbage-1"
    assert calls == []
    assert consumed(queue, "retried") == 0.0

    bus.relay()  # the queue keeps flowing after the garbage
    [order_id] = h.produce(bus.sessions, bus.service, 1)
    eventually(lambda: h.effect_counts(bus.engine) == {order_id: 1}, timeout=TIMEOUT, message="the next effect")
    assert no_dead_letter(queue)


def test_an_event_outside_the_catalogue_is_dead_lettered(bus: MemoryBus) -> None:
    handler = h.handler()
    bus.declare(handler)
    bus.consumer(handler)
    queue = bus.queue(handler)
    body = json.dumps({"specversion": "1.0", "id": "e-unknown", "source": "/guangmang/x", "type":
                       "cn.guangmang.nobody.knows.v1", "subject": "s", "time": "2024-05-01T08:00:00Z",
                       "data": {}})
    with memory_connection() as conn:
        EventPublisher(conn).publish_to_queue(queue, body, message_id="e-unknown", headers={})
    message = take_dead_letter(queue)
    assert json.loads(message.body)["id"] == "e-unknown"
    assert "not in the catalogue" in message.headers[ERROR_HEADER]
    assert h.effect_counts(bus.engine) == {}


def test_a_database_outage_spends_no_retry_and_parks_nothing(bus: MemoryBus) -> None:
    from sqlalchemy.exc import OperationalError

    from shared.consumer import Handler
    outages = {"left": 3}

    def flaky(session, event: Event) -> None:  # noqa: ANN001
        if outages["left"] > 0:
            outages["left"] -= 1
            raise OperationalError("INSERT ...", {}, ConnectionError("server closed the connection"))
        h.apply_effect(session, event)

    handler = Handler("apply", (h.EVENT,), flaky)
    bus.declare(handler, (0.05,))
    bus.consumer(handler, retry_delays=(0.05,))
    bus.relay()
    ids = h.produce(bus.sessions, bus.service, 3)
    counts = eventually(lambda: all_once(bus, ids), timeout=TIMEOUT, message="effects after the outage")
    assert set(counts.values()) == {1} and outages["left"] == 0
    queue = bus.queue(handler)
    assert consumed(queue, "retried") in (None, 0.0) and consumed(queue, "dead_lettered") in (None, 0.0)
    assert no_dead_letter(queue)

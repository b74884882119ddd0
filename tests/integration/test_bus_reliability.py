"""The bus against the real broker and database: nothing lost, nothing applied twice."""
from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field

import pytest
from kombu import Connection

from shared.bus import ATTEMPT_HEADER, ERROR_HEADER, EventPublisher, connect, dead_letter_queue_name
from shared.consumer import ConsumerRunner, InboxHandler
from shared.db import make_engine, make_session_factory
from shared.events import new_event
from shared.outbox import OutboxRelay, enqueue
from tests.support import bus_harness as h
from tests.support.infra import restart_broker_app
from tests.support.waiting import eventually, throughout

pytestmark = pytest.mark.integration


@dataclass
class BusEnv:
    db_url: str
    broker_url: str
    service: str
    engine: object
    sessions: object
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list = field(default_factory=list)

    def relay(self, **kwargs) -> OutboxRelay:
        relay = OutboxRelay(self.sessions, h.outbox, service=self.service, **kwargs)
        self._spawn(lambda: relay.run(lambda: connect(self.broker_url), self.stop, idle_seconds=0.02))
        return relay

    def consumer(self, handler=None, retry_delays=(0.2,)) -> ConsumerRunner:
        handler = handler or h.handler()
        sub = handler.subscription(self.service)
        runner = ConsumerRunner(lambda: connect(self.broker_url), sub,
                                InboxHandler(self.sessions, h.inbox, sub.queue, handler.fn),
                                retry_delays=retry_delays, stop=self.stop, prefetch=100)
        self._spawn(runner.run)
        assert runner.ready.wait(30), "consumer did not attach to its queue"
        return runner

    def _spawn(self, target) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.threads.append(thread)

    def proc(self, role: str, die_after: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tests.support.bus_proc", role, self.db_url, self.broker_url,
                               self.service, "--die-after", str(die_after)], timeout=120, capture_output=True)

    def queue_depth(self, queue: str) -> int:
        with Connection(self.broker_url) as conn:
            _name, depth, _consumers = conn.default_channel.queue_declare(queue=queue, passive=True)
            return depth


@pytest.fixture
def bus(infra):
    db_url = infra.database("bus")
    engine = make_engine(db_url)
    h.metadata.create_all(engine)
    env = BusEnv(db_url, infra.rabbitmq_url, f"bus{uuid.uuid4().hex[:8]}", engine, make_session_factory(engine))
    yield env
    env.stop.set()
    for thread in env.threads:
        thread.join(15)
    engine.dispose()
    infra.drop_database(db_url)


def all_once(env: BusEnv, ids: list[str]):
    counts = h.effect_counts(env.engine)
    return len(counts) == len(ids) and counts


def test_a_duplicate_delivery_is_applied_once(bus):
    bus.consumer()  # declares and binds the queue first
    [order_id] = h.produce(bus.sessions, bus.service, 1)
    with bus.sessions() as session:
        payload, event_id = session.execute(h.outbox.select()).first()[5], None
    with connect(bus.broker_url) as conn:
        publisher = EventPublisher(conn)
        import json
        event_id = json.loads(payload)["id"]
        publisher.publish(h.EVENT, payload, message_id=event_id)
        publisher.publish(h.EVENT, payload, message_id=event_id)
    queue = f"{bus.service}.apply"
    eventually(lambda: h.effect_counts(bus.engine).get(order_id), message="the effect")
    eventually(lambda: bus.queue_depth(queue) == 0, message="both deliveries consumed")
    assert h.effect_counts(bus.engine) == {order_id: 1}


def test_a_consumer_killed_after_commit_before_ack_applies_once(bus):
    runner = bus.consumer()  # declare the queue, then stop consuming so the child takes over
    bus.stop.set()
    eventually(lambda: not runner.ready.is_set(), message="consumer detached")
    bus.stop.clear()
    ids = h.produce(bus.sessions, bus.service, 5)
    relay = OutboxRelay(bus.sessions, h.outbox, service=bus.service)
    with connect(bus.broker_url) as conn:
        relay.publish_batch(EventPublisher(conn))
    child = bus.proc("consumer", die_after=3)
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    # The batch's effects committed together, then the process died before any ack:
    # every one of them is back in the queue, to be delivered again.
    assert sum(h.effect_counts(bus.engine).values()) >= 3
    eventually(lambda: bus.queue_depth(f"{bus.service}.apply") == 5, message="all five back in the queue")
    bus.consumer()
    counts = eventually(lambda: all_once(bus, ids), message="all five effects")
    assert set(counts.values()) == {1}
    eventually(lambda: bus.queue_depth(f"{bus.service}.apply") == 0, message="queue drained")
    assert set(h.effect_counts(bus.engine).values()) == {1}


def test_a_relay_killed_between_publish_and_marking_applies_once(bus):
    bus.consumer()
    ids = h.produce(bus.sessions, bus.service, 5)
    child = bus.proc("relay", die_after=3)
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    assert h.unpublished(bus.engine) == 5  # the batch reached the broker, none of it was marked
    eventually(lambda: len(h.effect_counts(bus.engine)) == 5, message="the published effects")
    bus.relay()
    counts = eventually(lambda: all_once(bus, ids), message="all five effects")
    eventually(lambda: h.unpublished(bus.engine) == 0, message="outbox marked")
    eventually(lambda: bus.queue_depth(f"{bus.service}.apply") == 0, message="queue drained")
    assert set(h.effect_counts(bus.engine).values()) == {1}, counts


def test_a_broker_restart_during_1000_events_applies_each_exactly_once(bus, infra):
    if not infra.local_broker:
        pytest.skip("needs rabbitmqctl on this machine to restart the broker")
    bus.consumer()
    bus.relay()
    ids: list[str] = []
    producer = threading.Thread(target=lambda: ids.extend(h.produce(bus.sessions, bus.service, 1000)))
    producer.start()
    eventually(lambda: sum(h.effect_counts(bus.engine).values()) >= 200, timeout=120, message="200 effects")
    restart_broker_app()
    producer.join(300)
    assert len(ids) == 1000
    eventually(lambda: all_once(bus, ids), timeout=240, interval=0.5, message="all 1000 effects")
    eventually(lambda: h.unpublished(bus.engine) == 0, timeout=60, message="outbox drained")
    eventually(lambda: bus.queue_depth(f"{bus.service}.apply") == 0, timeout=60, message="queue drained")
    counts = h.effect_counts(bus.engine)
    assert len(counts) == 1000 and set(counts.values()) == {1}


def test_a_poison_message_is_dead_lettered_after_bounded_retries_while_others_flow(bus):
    poison = lambda event: event.data["display_name"] == "order 0"  # noqa: E731
    delays = (0.3, 0.6)
    bus.consumer(h.handler(fail_for=poison), retry_delays=delays)
    bus.relay()
    ids = h.produce(bus.sessions, bus.service, 20)  # the poison goes first
    eventually(lambda: len(h.effect_counts(bus.engine)) == 19, message="the 19 healthy effects")
    # the healthy ones were applied while the poison was still cycling through its retries
    dlq = dead_letter_queue_name(f"{bus.service}.apply")
    assert bus.queue_depth(dlq) == 0
    eventually(lambda: bus.queue_depth(dlq) == 1, timeout=30, message="poison in the dead-letter queue")
    with Connection(bus.broker_url) as conn:
        message = conn.SimpleQueue(dlq).get(timeout=5)
        assert message.headers[ATTEMPT_HEADER] == len(delays)
        assert "poison" in message.headers[ERROR_HEADER]
        message.ack()
    counts = h.effect_counts(bus.engine)
    assert ids[0] not in counts and len(counts) == 19 and set(counts.values()) == {1}


def test_an_unroutable_publish_is_detected_and_its_row_stays_unpublished(bus):
    from shared.bus import EVENT_LOG
    with Connection(bus.broker_url) as conn:  # broken topology: no event log catching everything
        conn.default_channel.queue_delete(EVENT_LOG)
    bus.consumer()  # binds user.registered only
    [routable] = h.produce(bus.sessions, bus.service, 1)
    with bus.sessions() as session:
        # nothing in this virtual host now binds donation.received
        enqueue(session, h.outbox, new_event("donation.received", {
            "donation_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "amount": 5},
            service=bus.service, subject="d1"))
        session.commit()
    relay = OutboxRelay(bus.sessions, h.outbox, service=bus.service)
    with connect(bus.broker_url) as conn:
        relay.publish_batch(EventPublisher(conn))
    with bus.engine.connect() as conn:
        rows = {r.routing_key: r for r in conn.execute(h.outbox.select())}
    refused = rows["donation.received"]
    assert refused.published_at is None
    assert refused.attempts == 1 and "no queue" in refused.last_error
    assert refused.next_attempt_at is not None
    assert rows[h.EVENT].published_at is not None  # the rest of the batch went through
    eventually(lambda: h.effect_counts(bus.engine).get(routable), message="routable effect")


def test_concurrent_relays_never_claim_the_same_row(bus):
    from concurrent.futures import ThreadPoolExecutor
    bus.consumer()
    ids = h.produce(bus.sessions, bus.service, 400)

    def drain() -> int:
        relay = OutboxRelay(bus.sessions, h.outbox, service=bus.service, batch_size=25)
        claimed = 0
        with connect(bus.broker_url) as conn:
            publisher = EventPublisher(conn)
            while (n := relay.publish_batch(publisher)) > 0:
                claimed += n
        return claimed

    with ThreadPoolExecutor(3) as pool:
        totals = list(pool.map(lambda _: drain(), range(3)))
    assert sum(totals) == 400, totals  # SKIP LOCKED: every row claimed by exactly one relay
    assert min(totals) > 0, totals  # and the relays really did share the work
    eventually(lambda: all_once(bus, ids), message="400 effects")


def test_relay_reports_backlog_and_oldest_age(bus):
    from prometheus_client import REGISTRY
    h.produce(bus.sessions, bus.service, 7)
    relay = OutboxRelay(bus.sessions, h.outbox, service=bus.service)
    relay.refresh_metrics()
    assert REGISTRY.get_sample_value("guangmang_outbox_backlog", {"service": bus.service}) == 7
    assert REGISTRY.get_sample_value("guangmang_outbox_oldest_age_seconds", {"service": bus.service}) >= 0
    bus.consumer()
    with connect(bus.broker_url) as conn:
        relay.publish_batch(EventPublisher(conn))
    relay.refresh_metrics()
    assert REGISTRY.get_sample_value("guangmang_outbox_backlog", {"service": bus.service}) == 0
    assert REGISTRY.get_sample_value("guangmang_events_published_total",
                                     {"service": bus.service, "event": h.EVENT}) == 7


def read_event_log(broker_url: str, want: int, timeout: float = 15.0) -> list[dict]:
    """Read the event-log stream from its first offset, as the city-level platform would."""
    import json
    import socket

    from kombu import Consumer

    from shared.bus import event_log_queue
    got: list[dict] = []
    with Connection(broker_url) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 100, False)  # streams need a prefetch and manual acks

        def on_message(message):
            got.append(json.loads(message.body))
            message.ack()
        log = event_log_queue()
        log.consumer_arguments = {"x-stream-offset": "first"}
        with Consumer(channel, queues=[log], on_message=on_message):
            eventually(lambda: _drain_some(conn, socket) or len(got) >= want, timeout=timeout,
                       message=f"{want} events in the log")
    return got


def _drain_some(conn, socket) -> bool:
    try:
        conn.drain_events(timeout=0.2)
    except (socket.timeout, TimeoutError):
        pass
    return False


def test_an_event_no_handler_consumes_still_leaves_the_outbox_and_lands_in_the_event_log(bus):
    with bus.sessions() as session:
        enqueue(session, h.outbox, new_event("donation.received", {
            "donation_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "amount": 5},
            service=bus.service, subject="d-log"))
        session.commit()
    bus.relay()  # the running relay declares the event log before it publishes
    eventually(lambda: h.unpublished(bus.engine) == 0, message="the donation published")
    logged = read_event_log(bus.broker_url, 1)
    assert [e["type"] for e in logged if e["subject"] == "d-log"] == ["cn.guangmang.donation.received.v1"]


def test_a_database_outage_spends_no_retry_and_loses_nothing(bus, infra):
    import psycopg
    from prometheus_client import REGISTRY

    from shared.bus import Outgoing
    ids = h.produce(bus.sessions, bus.service, 20)
    with bus.engine.connect() as conn:
        messages = [Outgoing(r.routing_key, r.payload, r.event_id) for r in conn.execute(h.outbox.select())]
    bus.consumer(retry_delays=(0.2,))
    name = bus.db_url.rsplit("/", 1)[1]
    admin = psycopg.connect(infra.postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    try:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        with connect(bus.broker_url) as conn:
            assert EventPublisher(conn).publish_many(messages) == {}
        queue = f"{bus.service}.apply"
        # the consumer cannot reach its database: the messages wait, no retry is spent
        eventually(lambda: (REGISTRY.get_sample_value("guangmang_events_consumed_total",
                                                      {"queue": queue, "outcome": "applied"}) or 0) == 0
                   and bus.queue_depth(queue) == 20, message="messages waiting while the database is down")
        # an outage lasting far longer than every retry delay: still nothing dead-lettered
        throughout(lambda: bus.queue_depth(dead_letter_queue_name(queue)) == 0, seconds=3,
                   message="an empty dead-letter queue")
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
    counts = eventually(lambda: all_once(bus, ids), timeout=60, message="all effects after the outage")
    assert set(counts.values()) == {1}
    assert (REGISTRY.get_sample_value("guangmang_events_consumed_total", {"queue": queue, "outcome": "retried"})
            or 0) == 0
    assert bus.queue_depth(dead_letter_queue_name(queue)) == 0

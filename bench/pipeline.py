"""Throughput of the whole event pipeline, next to a bare RabbitMQ and a bare PostgreSQL loop.

    python -m bench.pipeline [--events 5000] [--warmup 300] [--mode process|thread] [--producers 1]
                             [--batch-size 200] [--prefetch 50] [--idle 0.05] [--poll 0.01]
                             [--phases postgres,kombu,pipeline[,stages]] [--json PATH] [--profile DIR]

Three phases (and an opt-in diagnostic one), each against the real broker and database found by ``tests.support.infra.discover()``
(a throwaway virtual host on a local broker, a fresh database per phase, both removed at the end):

``raw_postgres``  one connection, N times: one-row UPDATE + one-row INSERT, commit.
``raw_kombu``     a publisher (persistent, publisher confirms) and a consumer (prefetch, one ack
                  per message) on one durable queue; first publish to last ack.
``pipeline``      producer (business row + outbox row, one transaction per event, as
                  ``tests.support.bus_harness.produce``) -> ``OutboxRelay`` -> RabbitMQ ->
                  ``ConsumerRunner`` + ``InboxHandler`` -> inbox + effect; first business write to
                  the poll that sees the last effect committed.
``stages``        (opt-in) producer, relay and consumer each alone on a backlog: which one caps
                  the pipeline, and what each costs when it has the machine to itself.

The producer, relay and consumer run concurrently, by default each in its own process (as in
production: the API, the producing service's worker and the consuming service's worker are
separate processes); ``--mode thread`` puts them in threads of one process instead. The kombu
baseline uses the same mode for its publisher and consumer.

The headline is pipeline / raw_postgres (target >= 0.5). The exit code is 0 whatever the ratio
(it is a benchmark, not a test); it is non-zero only when the benchmark itself could not run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import platform
import queue as queue_mod
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

TARGET_RATIO = 0.5
RETRY_DELAYS = (1.0,)  # the pipeline never fails a handler; one retry queue keeps the topology real
_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def sample_payload() -> str:
    """A real event body, so every phase moves messages/rows of the pipeline's size."""
    from tests.support import bus_harness as h
    return h.order_event("bench", str(uuid.uuid4()), 0).to_json()


# ---- running roles as processes or threads ---------------------------------------------------

class RoleFailed(RuntimeError):
    pass


def _role_main(name: str, results: Any, profile_dir: str | None, target: Callable[..., None],
               args: tuple) -> None:
    """Entry point of every role, in a child process or a thread: reports a crash to ``results``."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(levelname)s %(name)s: %(message)s")

        def exit_with_parent() -> None:  # the conductor was killed: do not linger
            parent.join()
            os._exit(3)
        threading.Thread(target=exit_with_parent, daemon=True).start()
    profiler = None
    if profile_dir:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    try:
        target(*args)
    except BaseException:  # noqa: BLE001 - tell the conductor, whatever it was
        results.put(("error", name, traceback.format_exc()))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"{name}.prof"))


class Runtime:
    """Starts roles as spawned processes (``process``) or as daemon threads (``thread``)."""

    def __init__(self, mode: str, profile_dir: str | None) -> None:
        self.mode = mode
        self.profile_dir = profile_dir
        if profile_dir:
            os.makedirs(profile_dir, exist_ok=True)
        self.ctx = multiprocessing.get_context("spawn") if mode == "process" else None
        self.results = self.queue()
        self.pending: list[tuple] = []
        self.workers: list[tuple[str, Any]] = []

    def event(self) -> Any:
        return self.ctx.Event() if self.ctx else threading.Event()

    def queue(self) -> Any:
        return self.ctx.Queue() if self.ctx else queue_mod.Queue()

    def start(self, name: str, target: Callable[..., None], *args: Any) -> None:
        spec = dict(target=_role_main, args=(name, self.results, self.profile_dir, target, args),
                    name=name, daemon=True)
        worker = self.ctx.Process(**spec) if self.ctx else threading.Thread(**spec)
        worker.start()
        self.workers.append((name, worker))

    def pids(self) -> dict[int, str]:
        """{pid: role} of the role processes (empty in thread mode)."""
        return {worker.pid: name for name, worker in self.workers if self.ctx and worker.pid}

    def check(self) -> None:
        """Raise if a role reported a crash or a role process died."""
        self.collect()
        for name, worker in self.workers:
            if self.ctx and worker.exitcode not in (None, 0):  # a crash it could not report
                raise RoleFailed(f"{name} exited with code {worker.exitcode}")

    def collect(self) -> None:
        """Move what the roles sent into ``self.pending`` (a crash report raises)."""
        while True:
            try:
                message = self.results.get_nowait()
            except queue_mod.Empty:
                return
            if message[0] == "error":
                raise RoleFailed(f"{message[1]} crashed:\n{message[2]}")
            self.pending.append(message)

    def take(self, kind: str, match: Callable[[tuple], bool] = lambda m: True) -> tuple | None:
        self.collect()
        for message in self.pending:
            if message[0] == kind and match(message):
                self.pending.remove(message)
                return message
        return None

    def wait_message(self, kind: str, deadline: float, match: Callable[[tuple], bool] = lambda m: True) -> tuple:
        while True:
            message = self.take(kind, match)
            if message is not None:
                return message
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind!r} message in time")
            time.sleep(0.005)

    def wait_event(self, event: Any, what: str, deadline: float) -> None:
        while not event.wait(0.1):
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready in time")

    def shutdown(self, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        for name, worker in self.workers:
            worker.join(max(0.1, end - time.monotonic()))
            if worker.is_alive():
                if self.ctx:
                    say(f"{name} did not stop in time; terminating it")
                    worker.terminate()
                    worker.join(5)
                else:
                    say(f"{name} thread did not stop in time (daemon thread, left behind)")


def _local_stop(stop: Any) -> threading.Event:
    """A threading.Event mirroring ``stop`` (the shared loops get what a worker gives them)."""
    if isinstance(stop, threading.Event):
        return stop
    local = threading.Event()

    def bridge() -> None:
        stop.wait()
        local.set()
    threading.Thread(target=bridge, daemon=True).start()
    return local


# ---- CPU accounting (Linux /proc; silently empty elsewhere) ----------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot() -> tuple[float, dict[int, tuple[str, float]]]:
    """(machine busy CPU-seconds, {pid: (command name, CPU-seconds)}) from /proc."""
    busy = 0.0
    procs: dict[int, tuple[str, float]] = {}
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / _TICK  # all but idle and iowait
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    raw = fh.read()
            except OSError:
                continue
            comm = raw[raw.index("(") + 1:raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2:].split()
            procs[int(entry)] = (comm, (int(rest[11]) + int(rest[12])) / _TICK)
    except (OSError, ValueError, IndexError):
        pass
    return busy, procs


class CpuMeter:
    """CPU used between ``start()`` and ``stop()``: whole machine, and per group of processes."""

    def __init__(self, roles: dict[int, str] | None = None) -> None:
        self.roles = roles or {}

    def start(self) -> None:
        self.began = time.monotonic()
        self.before = _cpu_snapshot()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.began
        busy_after, after = _cpu_snapshot()
        busy_before, before = self.before
        if not after or wall <= 0:
            return {}
        me = os.getpid()
        groups: dict[str, float] = {}
        for pid, (comm, used) in after.items():
            delta = used - before.get(pid, (comm, 0.0))[1]
            if delta <= 0:
                continue
            if pid in self.roles:
                group = self.roles[pid]
            elif pid == me:
                group = "bench (this process" + (", all roles)" if not self.roles else ")")
            elif comm.startswith("postgres"):
                group = "postgresql"
            elif comm.startswith("beam") or comm in ("erl_child_setup", "epmd", "inet_gethost"):
                group = "rabbitmq"
            else:
                group = f"other: {comm}"
            groups[group] = groups.get(group, 0.0) + delta
        # name a competing process only when it matters (say, a test run beside the benchmark)
        for group in [g for g, used in groups.items() if g.startswith("other: ") and used < 0.05 * wall]:
            groups["other"] = groups.get("other", 0.0) + groups.pop(group)
        cpus = os.cpu_count() or 1
        return {"wall_s": wall, "machine_busy_pct": 100 * (busy_after - busy_before) / (wall * cpus),
                "cores_used": {k: round(v / wall, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}}


def cpu_line(cpu: dict[str, Any]) -> str:
    if not cpu:
        return ""
    parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu["cores_used"].items() if v >= 0.01)
    return f"CPU {cpu['machine_busy_pct']:.0f}% of {os.cpu_count()} cores busy; cores used: {parts}"


# ---- roles (top level: they are pickled by reference into spawned processes) -----------------

def _pipeline_producer(db_url: str, service: str, commands: Any, results: Any) -> None:
    from shared.db import make_engine, make_session_factory
    from tests.support import bus_harness as h
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    try:
        while True:
            command = commands.get()
            if command is None:
                return
            count, start = command
            began = time.monotonic()
            h.produce(sessions, service, count, start)
            results.put(("produced", start + count, began, time.monotonic()))
    finally:
        engine.dispose()


class Producers:
    """``--producers`` producer roles; each batch of events is split evenly between them."""

    def __init__(self, rt: Runtime, count: int, db_url: str, service: str) -> None:
        self.rt = rt
        self.queues = [rt.queue() for _ in range(count)]
        self.expected = 0
        self.got: list[tuple] = []
        for i, commands in enumerate(self.queues):
            rt.start("producer" if count == 1 else f"producer{i + 1}", _pipeline_producer, db_url, service,
                     commands, rt.results)

    def send(self, count: int, start: int) -> None:
        k = len(self.queues)
        self.expected, self.got = 0, []
        for i, commands in enumerate(self.queues):
            share = count // k + (1 if i < count % k else 0)
            if share:
                commands.put((share, start))
                start += share
                self.expected += 1

    def poll(self) -> tuple[float, float] | None:
        """(first write began, last commit ended) once every producer finished its share."""
        while len(self.got) < self.expected:
            message = self.rt.take("produced")
            if message is None:
                return None
            self.got.append(message)
        return min(m[2] for m in self.got), max(m[3] for m in self.got)

    def wait(self, deadline: float) -> tuple[float, float]:
        while (done := self.poll()) is None:
            self.rt.check()
            if time.monotonic() > deadline:
                raise TimeoutError("the producers did not finish in time")
            time.sleep(0.005)
        return done

    def close(self) -> None:
        for commands in self.queues:
            commands.put(None)


def _pipeline_relay(db_url: str, broker_url: str, service: str, batch_size: int, idle: float,
                    stop: Any) -> None:
    from shared.bus import connect
    from shared.db import make_engine, make_session_factory
    from shared.outbox import OutboxRelay
    from tests.support import bus_harness as h
    engine = make_engine(db_url, pre_ping=False)  # as the worker builds it
    try:
        relay = OutboxRelay(make_session_factory(engine), h.outbox, service=service, batch_size=batch_size)
        relay.run(lambda: connect(broker_url), _local_stop(stop), idle_seconds=idle)
    finally:
        engine.dispose()


def _pipeline_consumer(db_url: str, broker_url: str, service: str, prefetch: int, stop: Any,
                       ready: Any) -> None:
    from shared.bus import connect
    from shared.consumer import ConsumerRunner, InboxHandler
    from shared.db import make_engine, make_session_factory
    from tests.support import bus_harness as h
    engine = make_engine(db_url, pre_ping=False)  # as the worker builds it
    local_stop = _local_stop(stop)
    handler = h.handler()
    sub = handler.subscription(service)
    runner = ConsumerRunner(lambda: connect(broker_url), sub,
                            InboxHandler(make_session_factory(engine), h.inbox, sub.queue, handler.fn),
                            retry_delays=RETRY_DELAYS, stop=local_stop, prefetch=prefetch)

    def signal_ready() -> None:
        while not local_stop.is_set():
            if runner.ready.wait(0.1):
                ready.set()
                return
    threading.Thread(target=signal_ready, daemon=True).start()
    try:
        runner.run()
    finally:
        engine.dispose()


def _kombu_publisher(broker_url: str, queue_name: str, body: str, commands: Any, results: Any) -> None:
    from kombu import Connection, Producer
    with Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        conn.ensure_connection(max_retries=3)
        producer = Producer(conn.channel())
        sent = 0
        while True:
            command = commands.get()
            if command is None:
                return
            began = time.monotonic()
            for _ in range(command):
                producer.publish(body, exchange="", routing_key=queue_name, delivery_mode=2,
                                 content_type="application/cloudevents+json", content_encoding="utf-8",
                                 message_id=str(uuid.uuid4()), retry=False)
            sent += command
            results.put(("published", sent, began, time.monotonic()))


def _kombu_consumer(broker_url: str, queue_name: str, prefetch: int, targets: list[int], stop: Any,
                    ready: Any, results: Any) -> None:
    from kombu import Connection, Consumer, Queue
    local_stop = _local_stop(stop)
    targets = sorted(targets)
    state = {"acked": 0}

    def on_message(message) -> None:  # noqa: ANN001
        message.ack()
        state["acked"] += 1
        if targets and state["acked"] >= targets[0]:
            results.put(("consumed", targets.pop(0), time.monotonic()))

    with Connection(broker_url) as conn:
        conn.ensure_connection(max_retries=3)
        queue = Queue(queue_name, durable=True, auto_delete=False)
        with Consumer(conn.channel(), queues=[queue], on_message=on_message, prefetch_count=prefetch):
            ready.set()
            while not local_stop.is_set():
                try:
                    conn.drain_events(timeout=0.5)
                except (socket.timeout, TimeoutError):
                    pass


# ---- phases ---------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    events: int
    seconds: float | None = None
    complete: bool = False
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.events / self.seconds if self.seconds else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": self.rate}


@dataclass
class Cleanup:
    infra: Any
    vhost: str | None = None
    databases: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)

    def run(self) -> None:
        from tests.support.infra import delete_vhost
        for url in self.databases:
            try:
                self.infra.drop_database(url)
            except Exception as exc:  # noqa: BLE001
                say(f"could not drop {url}: {exc}")
        if self.vhost:
            delete_vhost(self.vhost)
        elif self.queues:
            from kombu import Connection
            try:
                with Connection(self.infra.rabbitmq_url) as conn:
                    channel = conn.channel()
                    for name in self.queues:
                        with contextlib.suppress(Exception):
                            channel.queue_delete(name)
            except Exception as exc:  # noqa: BLE001
                say(f"could not delete the benchmark queues: {exc}")
        say("cleaned up: " + ", ".join(filter(None, [
            f"{len(self.databases)} database(s) dropped" if self.databases else "",
            f"vhost {self.vhost} deleted" if self.vhost else "",
            f"{len(self.queues)} queue(s) deleted" if self.queues and not self.vhost else ""])))


def run_raw_postgres(opts: argparse.Namespace, cleanup: Cleanup) -> Phase:
    import psycopg
    phase = Phase("raw_postgres", opts.events)
    url = cleanup.infra.database("bench_pg")
    cleanup.databases.append(url)
    payload = sample_payload()
    deadline = time.monotonic() + opts.phase_timeout
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute("CREATE TABLE bench_counter (id integer PRIMARY KEY, n bigint NOT NULL,"
                     " updated_at timestamptz NOT NULL)")
        conn.execute("CREATE TABLE bench_log (id bigserial PRIMARY KEY, ref varchar(36) NOT NULL,"
                     " payload text NOT NULL, created_at timestamptz NOT NULL)")
        conn.execute("INSERT INTO bench_counter VALUES (1, 0, now())")
        conn.commit()

        def loop(count: int) -> int:
            for done in range(count):
                if done % 200 == 0 and time.monotonic() > deadline:
                    return done
                conn.execute("UPDATE bench_counter SET n = n + 1, updated_at = now() WHERE id = 1")
                conn.execute("INSERT INTO bench_log (ref, payload, created_at) VALUES (%s, %s, now())",
                             (str(uuid.uuid4()), payload))
                conn.commit()
            return count

        say(f"raw_postgres: warm-up, {opts.warmup} x (UPDATE + INSERT + COMMIT) on one connection")
        loop(opts.warmup)
        say(f"raw_postgres: measuring {opts.events} transactions")
        meter = CpuMeter()
        meter.start()
        began = time.monotonic()
        done = loop(opts.events)
        phase.seconds = time.monotonic() - began
        phase.detail["cpu"] = meter.stop()
        phase.events = done
        phase.complete = done == opts.events
        counter = conn.execute("SELECT n FROM bench_counter WHERE id = 1").fetchone()[0]
        conn.commit()
        if counter != opts.warmup + done:
            raise RoleFailed(f"raw_postgres: counter is {counter}, expected {opts.warmup + done}")
    if not phase.complete:
        phase.note = f"timed out after {done} transactions"
    say(f"raw_postgres: {done} transactions in {phase.seconds:.2f}s = {phase.rate:,.0f}/s")
    say(f"raw_postgres: {cpu_line(phase.detail['cpu'])}")
    return phase


def run_raw_kombu(opts: argparse.Namespace, cleanup: Cleanup) -> Phase:
    phase = Phase("raw_kombu", opts.events)
    broker = cleanup.infra.rabbitmq_url
    queue_name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    cleanup.queues.append(queue_name)
    rt = Runtime(opts.mode, opts.profile and os.path.join(opts.profile, "kombu"))
    stop, ready, commands = rt.event(), rt.event(), rt.queue()
    deadline = time.monotonic() + opts.phase_timeout
    try:
        say(f"raw_kombu: starting consumer (prefetch {opts.prefetch}) and publisher (confirms, persistent) "
            f"as {opts.mode}es")
        rt.start("kombu-consumer", _kombu_consumer, broker, queue_name, opts.prefetch,
                 [opts.warmup, opts.warmup + opts.events], stop, ready, rt.results)
        rt.wait_event(ready, "kombu consumer", deadline)
        rt.start("kombu-publisher", _kombu_publisher, broker, queue_name, sample_payload(), commands, rt.results)
        if opts.warmup:
            say(f"raw_kombu: warm-up, {opts.warmup} messages")
            commands.put(opts.warmup)
            rt.wait_message("consumed", deadline, lambda m: m[1] == opts.warmup)
            rt.wait_message("published", deadline)
        say(f"raw_kombu: measuring {opts.events} messages")
        meter = CpuMeter(rt.pids())
        meter.start()
        commands.put(opts.events)
        _, _, began, published_at = rt.wait_message("published", deadline)
        _, _, consumed_at = rt.wait_message("consumed", deadline, lambda m: m[1] == opts.warmup + opts.events)
        phase.seconds = consumed_at - began
        phase.complete = True
        phase.detail = {"publish_seconds": published_at - began,
                        "publish_only_per_s": opts.events / (published_at - began), "cpu": meter.stop()}
        say(f"raw_kombu: {opts.events} messages in {phase.seconds:.2f}s = {phase.rate:,.0f}/s "
            f"(publishing alone took {published_at - began:.2f}s)")
        say(f"raw_kombu: {cpu_line(phase.detail['cpu'])}")
    except TimeoutError as exc:
        phase.note = f"timed out: {exc}"
        say(f"raw_kombu: {phase.note}")
    finally:
        stop.set()
        commands.put(None)
        rt.shutdown()
    return phase


def _prepare(cleanup: Cleanup, prefix: str) -> tuple[str, str, str]:
    """A fresh database with the harness tables, and a fresh service name; all noted for cleanup."""
    from shared.db import make_engine
    from tests.support import bus_harness as h
    url = cleanup.infra.database(prefix)
    cleanup.databases.append(url)
    engine = make_engine(url)
    h.metadata.create_all(engine)
    engine.dispose()
    service = f"bench{uuid.uuid4().hex[:6]}"
    queue = f"{service}.apply"
    cleanup.queues += [queue, f"{queue}.dlq"] + [f"{queue}.retry.{int(d * 1000)}" for d in RETRY_DELAYS]
    return url, service, queue


def run_pipeline(opts: argparse.Namespace, cleanup: Cleanup) -> Phase:
    import psycopg

    phase = Phase("pipeline", opts.events)
    broker = cleanup.infra.rabbitmq_url
    url, service, queue = _prepare(cleanup, "bench_pipe")
    rt = Runtime(opts.mode, opts.profile and os.path.join(opts.profile, "pipeline"))
    stop, ready = rt.event(), rt.event()
    producers: Producers | None = None
    deadline = time.monotonic() + opts.phase_timeout
    poller = psycopg.connect(_libpq(url), autocommit=True)

    def effects() -> int:
        return poller.execute("SELECT count(*) FROM effects").fetchone()[0]

    def unpublished() -> int:
        return poller.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]

    try:
        say(f"pipeline: starting consumer (prefetch {opts.prefetch}), relay (batch {opts.batch_size}, "
            f"idle {opts.idle}s) and {opts.producers} producer(s) as {opts.mode}es")
        rt.start("consumer", _pipeline_consumer, url, broker, service, opts.prefetch, stop, ready)
        rt.wait_event(ready, "consumer", deadline)  # its queue is declared and bound: nothing unroutable
        rt.start("relay", _pipeline_relay, url, broker, service, opts.batch_size, opts.idle, stop)
        producers = Producers(rt, opts.producers, url, service)
        if opts.warmup:
            say(f"pipeline: warm-up, {opts.warmup} events")
            producers.send(opts.warmup, 0)
            while effects() < opts.warmup:
                rt.check()
                if time.monotonic() > deadline:
                    raise TimeoutError("warm-up did not finish")
                time.sleep(opts.poll)
            producers.wait(deadline)
        target = opts.warmup + opts.events
        say(f"pipeline: measuring {opts.events} events (polling effects every {opts.poll * 1000:.0f} ms)")
        meter = CpuMeter(rt.pids())
        meter.start()
        sent_at = time.monotonic()
        producers.send(opts.events, opts.warmup)
        produced: tuple[float, float] | None = None
        drained_at: float | None = None
        last_report = sent_at
        samples: list[tuple[float, int, int]] = []
        while True:
            polled_at = time.monotonic()
            done = effects()
            if produced is None:
                produced = producers.poll()
            if produced is not None and drained_at is None and unpublished() == 0:
                drained_at = polled_at
            if done >= target:
                ended = polled_at  # this poll's snapshot already held the last effect
                break
            rt.check()
            if polled_at - last_report >= 1.0:
                waiting = unpublished()
                samples.append((polled_at - sent_at, done - opts.warmup, waiting))
                say(f"pipeline: {done - opts.warmup:5d}/{opts.events} effects, {waiting} outbox rows unpublished"
                    + ("" if produced is None else ", producer done"))
                last_report = polled_at
            if polled_at > deadline:
                raise TimeoutError(f"only {done - opts.warmup}/{opts.events} effects")
            time.sleep(opts.poll)
        cpu = meter.stop()
        if produced is None:
            produced = producers.wait(deadline)
        began, produced_at = produced
        if drained_at is None:
            drained_at = ended
        phase.seconds = ended - began
        phase.complete = True
        effects_total, distinct = poller.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM effects").fetchone()
        phase.detail = {
            "producer_seconds": produced_at - began,
            "producer_only_per_s": opts.events / (produced_at - began),
            "outbox_drained_at_s": drained_at - began,
            "last_effect_at_s": ended - began,
            "command_latency_s": began - sent_at,
            "effects": effects_total, "distinct_effects": distinct, "unpublished_left": unpublished(),
            "progress": samples, "cpu": cpu,
        }
        if effects_total != distinct or effects_total != target:
            phase.note = f"WRONG: {effects_total} effects for {distinct} distinct events, expected {target}"
        say(f"pipeline: {opts.events} events in {phase.seconds:.2f}s = {phase.rate:,.0f}/s "
            f"(producer done at {produced_at - began:.2f}s = {opts.events / (produced_at - began):,.0f}/s, "
            f"outbox drained at {drained_at - began:.2f}s, last effect at {ended - began:.2f}s)")
        say(f"pipeline: {cpu_line(cpu)}")
    except TimeoutError as exc:
        phase.note = f"timed out: {exc}"
        say(f"pipeline: {phase.note}")
    finally:
        stop.set()
        if producers is not None:
            producers.close()
        rt.shutdown()
        poller.close()
    return phase


def _backlog_drain(label: str, progress: Callable[[], int], total: int, rt: Runtime, poll: float,
                   deadline: float) -> Phase:
    """Time one stage working off a backlog of ``total``: from its first visible progress (so
    process start-up and connecting are left out) to the poll that sees all of it done."""
    phase = Phase(f"stage:{label}", total)
    meter = CpuMeter(rt.pids())
    first: tuple[float, int] | None = None
    last_report = time.monotonic()
    while True:
        polled_at = time.monotonic()
        done = progress()
        if first is None and done > 0:
            first = (polled_at, done)
            meter.start()
        if done >= total:
            break
        rt.check()
        if polled_at - last_report >= 1.0:
            say(f"stages: {label} {done}/{total}")
            last_report = polled_at
        if polled_at > deadline:
            phase.note = f"timed out at {done}/{total}"
            say(f"stages: {label} {phase.note}")
            return phase
        time.sleep(poll)
    assert first is not None
    phase.events = total - first[1]
    phase.seconds = polled_at - first[0]
    phase.complete = True
    phase.detail["cpu"] = meter.stop() if phase.seconds > 0 else {}
    say(f"stages: {label} alone: {phase.events} in {phase.seconds:.2f}s = {phase.rate:,.0f}/s; "
        f"{cpu_line(phase.detail['cpu'])}")
    return phase


def run_stages(opts: argparse.Namespace, cleanup: Cleanup) -> list[Phase]:
    """Diagnostic: each pipeline stage alone, working off a backlog the previous one left.

    producer (no relay, no consumer running) -> the outbox holds warm-up + N rows; relay alone
    drains it into the bound queue; consumer alone drains the queue. Shows which stage caps the
    pipeline and what the stages cost when they do not compete for the CPUs.
    """
    import psycopg
    from kombu import Connection

    from shared.bus import declare_topology
    from tests.support import bus_harness as h
    broker = cleanup.infra.rabbitmq_url
    url, service, queue = _prepare(cleanup, "bench_stages")
    with Connection(broker) as conn:
        declare_topology(conn, [h.handler().subscription(service)], RETRY_DELAYS)
    total = opts.warmup + opts.events
    rt = Runtime(opts.mode, opts.profile and os.path.join(opts.profile, "stages"))
    relay_stop, consumer_stop, ready = rt.event(), rt.event(), rt.event()
    producers: Producers | None = None
    deadline = time.monotonic() + opts.phase_timeout
    poller = psycopg.connect(_libpq(url), autocommit=True)
    results: list[Phase] = []
    try:
        say(f"stages: {opts.producers} producer(s) alone ({opts.warmup} warm-up + {opts.events} events, "
            "nothing consuming)")
        producers = Producers(rt, opts.producers, url, service)
        if opts.warmup:
            producers.send(opts.warmup, 0)
            producers.wait(deadline)
        meter = CpuMeter(rt.pids())
        meter.start()
        producers.send(opts.events, opts.warmup)
        began, ended = producers.wait(deadline)
        producer = Phase("stage:producer", opts.events, ended - began, True, detail={"cpu": meter.stop()})
        say(f"stages: producer alone: {opts.events} in {producer.seconds:.2f}s = {producer.rate:,.0f}/s; "
            f"{cpu_line(producer.detail['cpu'])}")
        results.append(producer)
        producers.close()

        say(f"stages: relay alone (batch {opts.batch_size}) on {total} outbox rows")
        rt.start("relay", _pipeline_relay, url, broker, service, opts.batch_size, opts.idle, relay_stop)
        unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        results.append(_backlog_drain("relay", lambda: total - poller.execute(unpublished).fetchone()[0],
                                      total, rt, opts.poll, deadline))
        relay_stop.set()

        say(f"stages: consumer alone (prefetch {opts.prefetch}) on {total} queued messages")
        rt.start("consumer", _pipeline_consumer, url, broker, service, opts.prefetch, consumer_stop, ready)
        results.append(_backlog_drain("consumer", lambda: poller.execute("SELECT count(*) FROM effects").fetchone()[0],
                                      total, rt, opts.poll, deadline))
    except TimeoutError as exc:
        say(f"stages: timed out: {exc}")
    finally:
        relay_stop.set()
        consumer_stop.set()
        if producers is not None:
            producers.close()
        rt.shutdown()
        poller.close()
    return results


# ---- main -----------------------------------------------------------------------------------

PHASES = {"postgres": run_raw_postgres, "kombu": run_raw_kombu, "pipeline": run_pipeline, "stages": run_stages}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="measured events per phase (default 5000)")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured events first (default 300)")
    parser.add_argument("--mode", choices=["process", "thread"], default="process",
                        help="run producer/relay/consumer (and the kombu pair) as processes or threads")
    parser.add_argument("--producers", type=int, default=1,
                        help="concurrent producers sharing the events (default 1, like the raw_postgres "
                             "loop's one connection; more is what an API with several workers does)")
    parser.add_argument("--batch-size", type=int, default=200, help="OutboxRelay batch_size (default 200)")
    parser.add_argument("--prefetch", type=int, default=50, help="consumer prefetch_count (default 50)")
    parser.add_argument("--idle", type=float, default=0.05, help="relay idle_seconds (default 0.05)")
    parser.add_argument("--poll", type=float, default=0.01, help="effects poll interval, s (default 0.01)")
    parser.add_argument("--phases", default="postgres,kombu,pipeline",
                        help="comma-separated, in order, from postgres,kombu,pipeline,stages "
                             "(default postgres,kombu,pipeline; 'stages' times producer, relay and "
                             "consumer each alone, as a diagnostic)")
    parser.add_argument("--phase-timeout", type=float, default=120.0, help="give up on a phase after this (s)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--profile", metavar="DIR",
                        help="cProfile every role into DIR/<phase>/<role>.prof (distorts the figures)")
    opts = parser.parse_args(argv)
    opts.phases = [p.strip() for p in opts.phases.split(",") if p.strip()]
    unknown = set(opts.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if opts.events < 1 or opts.warmup < 0 or opts.producers < 1:
        parser.error("--events and --producers must be >= 1, --warmup >= 0")
    return opts


def report(phases: dict[str, Phase], opts: argparse.Namespace, infra: Any) -> dict[str, Any]:
    print()
    print(f"{'phase':<14} {'events':>7} {'seconds':>9} {'events/s':>10}  note")
    for phase in phases.values():
        seconds = "-" if phase.seconds is None else f"{phase.seconds:.2f}"
        rate = "-" if phase.rate is None else f"{phase.rate:,.0f}"
        print(f"{phase.name:<14} {phase.events:>7} {seconds:>9} {rate:>10}  {phase.note}")
    rates = {name: p.rate if p.complete and not p.note.startswith("WRONG") else None
             for name, p in phases.items()}
    ratios: dict[str, float | None] = {}
    for base in ("raw_postgres", "raw_kombu"):
        if "pipeline" in rates and base in rates:
            ok = rates["pipeline"] and rates[base]
            ratios[f"pipeline/{base}"] = rates["pipeline"] / rates[base] if ok else None
    print()
    for name, value in ratios.items():
        print(f"ratio {name:<22} {'-' if value is None else f'{value:.3f}'}")
    headline = ratios.get("pipeline/raw_postgres")
    met = headline is not None and headline >= TARGET_RATIO
    if "pipeline/raw_postgres" in ratios:
        verdict = ("MET" if met else "NOT MET") if headline is not None else "UNKNOWN (a phase did not complete)"
        print(f"target pipeline/raw_postgres >= {TARGET_RATIO}: {verdict}")
    print(f"(mode {opts.mode}, {opts.producers} producer(s), relay batch_size {opts.batch_size}, idle {opts.idle}s, prefetch {opts.prefetch}, "
          f"{opts.events} events after {opts.warmup} warm-up, {os.cpu_count()} CPUs, infra: {infra.how})")
    return {
        "config": {k: v for k, v in vars(opts).items() if k not in ("json",)},
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "infra": infra.how},
        "phases": {name: p.as_dict() for name, p in phases.items()},
        "ratios": ratios, "target": TARGET_RATIO, "target_met": met,
    }


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up (databases, vhost, children) on SIGTERM too
    from tests.support.infra import discover, isolated_vhost
    say("finding RabbitMQ and PostgreSQL (tests.support.infra.discover)")
    infra, reason = discover()
    if infra is None:
        say(f"cannot run: {reason}")
        return 2
    infra, vhost = isolated_vhost(infra)
    say(f"using {infra.how}" + (f", throwaway vhost {vhost}" if vhost else ", shared vhost"))
    if opts.profile:
        say(f"profiling into {opts.profile} (figures are distorted by the profiler)")
    if opts.mode == "thread":
        logging.basicConfig(level=logging.WARNING, format="[%(threadName)s] %(levelname)s %(name)s: %(message)s")
    cleanup = Cleanup(infra, vhost)
    phases: dict[str, Phase] = {}
    try:
        for key in opts.phases:
            outcome = PHASES[key](opts, cleanup)
            for phase in outcome if isinstance(outcome, list) else [outcome]:
                phases[phase.name] = phase
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except RoleFailed as exc:
        say(f"benchmark failed: {exc}")
        return 1
    finally:
        cleanup.run()
    figures = report(phases, opts, infra)
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
        say(f"figures written to {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

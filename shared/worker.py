"""The worker process: a service's event consumers and its outbox relay, as threads.

Each consumer and the relay get their own broker connection (py-amqp connections are not
thread-safe). SIGTERM/SIGINT set one stop event; every loop finishes what it holds and leaves.
"""
from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from kombu import Connection
from prometheus_client import start_http_server
from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from shared import inbox
from shared.bus import connect, declare_topology
from shared.config import Settings
from shared.consumer import ConsumerRunner, Handler, InboxHandler
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """Everything one service's worker runs; ``start()`` spawns threads, ``stop()`` ends them."""

    settings: Settings
    session_factory: sessionmaker[Session]
    outbox: Table
    inbox: Table
    handlers: Sequence[Handler]
    stop_event: threading.Event = field(default_factory=threading.Event)
    consumers: list[ConsumerRunner] = field(default_factory=list)
    relay: OutboxRelay | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def connection_factory(self) -> Callable[[], Connection]:
        url = self.settings.broker_url
        return lambda: connect(url)

    def declare(self) -> None:
        """Declare this service's whole topology once, before anything is published."""
        with connect(self.settings.broker_url) as conn:
            conn.ensure_connection(max_retries=5)
            declare_topology(conn, [h.subscription(self.settings.service) for h in self.handlers],
                             self.settings.retry_delays)

    def start(self, *, relay: bool = True) -> None:
        """Start a thread per consumer and (unless ``relay=False``) the outbox relay."""
        service = self.settings.service
        for handler in self.handlers:
            sub = handler.subscription(service)
            runner = ConsumerRunner(
                self.connection_factory(), sub,
                InboxHandler(self.session_factory, self.inbox, sub.queue, handler.fn),
                retry_delays=self.settings.retry_delays, stop=self.stop_event,
                prefetch=self.settings.prefetch)
            self.consumers.append(runner)
            self._spawn(runner.run, f"consumer:{sub.queue}")
        if self.handlers:
            self._spawn(self._prune_inbox, f"inbox-pruner:{service}")
        if relay:
            self.relay = OutboxRelay(self.session_factory, self.outbox, service=service,
                                     batch_size=self.settings.relay_batch_size)
            self._spawn(lambda: self.relay.run(self.connection_factory(), self.stop_event,
                                               idle_seconds=self.settings.relay_idle_seconds),
                        f"relay:{service}")

    def _prune_inbox(self) -> None:
        """Every ten minutes, forget inbox rows older than the inbox retention."""
        while not self.stop_event.wait(600):
            try:
                with self.session_factory() as session:
                    pruned = inbox.prune(session, self.inbox)
                    session.commit()
                if pruned:
                    log.info("pruned %d inbox rows", pruned)
            except Exception:  # noqa: BLE001 - pruning is housekeeping: log and try again later
                log.exception("inbox pruning failed")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once every consumer is attached to its queue."""
        return all(c.ready.wait(timeout) for c in self.consumers)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every loop to stop and wait for the threads to finish."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)


def serve_forever(worker: Worker) -> None:
    """Run ``worker`` in the foreground until SIGTERM or SIGINT."""
    def _on_signal(signum, _frame):  # noqa: ANN001
        log.info("signal %s: stopping", signum)
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if worker.settings.metrics_port:
        start_http_server(worker.settings.metrics_port)
    worker.start()
    log.info("worker started", extra={"handler": worker.settings.service})
    while not worker.stop_event.wait(1.0):
        pass
    worker.stop()
    log.info("worker stopped")

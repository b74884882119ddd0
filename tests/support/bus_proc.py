"""A relay or consumer in its own process, which can kill itself (``os._exit``) at a chosen point.

    python -m tests.support.bus_proc relay    DB_URL BROKER_URL SERVICE --die-after N
    python -m tests.support.bus_proc consumer DB_URL BROKER_URL SERVICE --die-after N

``relay``: dies right after the broker confirmed the N-th publish, before the batch is marked.
``consumer``: dies right after the N-th effect committed, before the message is acked.
"""
from __future__ import annotations

import argparse
import os
import threading

from shared.bus import connect
from shared.consumer import ConsumerRunner, InboxHandler
from shared.db import make_engine, make_session_factory
from shared.outbox import OutboxRelay
from tests.support import bus_harness as h


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "consumer"])
    parser.add_argument("db_url")
    parser.add_argument("broker_url")
    parser.add_argument("service")
    parser.add_argument("--die-after", type=int, required=True)
    args = parser.parse_args()
    sessions = make_session_factory(make_engine(args.db_url))
    stop = threading.Event()
    seen = {"n": 0}

    def countdown(_item: object) -> None:
        seen["n"] += 1
        if seen["n"] >= args.die_after:
            os._exit(9)  # no cleanup, no ack, no commit of anything in flight: like kill -9

    if args.role == "relay":
        relay = OutboxRelay(sessions, h.outbox, service=args.service, batch_size=1000, after_publish=countdown)
        relay.run(lambda: connect(args.broker_url), stop)
    else:
        handler = h.handler()
        sub = handler.subscription(args.service)
        runner = ConsumerRunner(lambda: connect(args.broker_url), sub,
                                InboxHandler(sessions, h.inbox, sub.queue, handler.fn),
                                retry_delays=(0.2,), stop=stop, prefetch=100, after_commit=countdown)
        runner.run()


if __name__ == "__main__":
    main()

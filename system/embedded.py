"""``python -m system.embedded`` (``make run``): migrate, seed the demo street and serve every
service in one process: SQLite file per service, kombu's in-memory transport, gateway on 8000.

The in-memory broker forgets what it holds when the process dies, but every event is first
committed to a service's outbox. At start the relays publish each outbox again from the top and
every consumer's inbox drops what it already applied, so a ``kill -9`` loses no committed event
and applies none twice.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import replace
from pathlib import Path

from werkzeug.serving import make_server

from shared import demo
from shared.config import Settings
from shared.logging import configure_logging
from shared.outbox import replay_all
from shared.service import ServiceKit
from system.registry import SEED_ORDER, SERVICES

log = logging.getLogger("embedded")


def settings_for(name: str, data_dir: Path, base_port: int) -> Settings:
    urls = {e.name: f"http://127.0.0.1:{base_port + e.port_offset}" for e in SERVICES if e.name != "gateway"}
    return replace(Settings.from_env(name), database_url=f"sqlite:///{data_dir / (name + '.db')}",
                   broker_url="memory://", service_urls=urls)


def main() -> None:
    data_dir = Path(os.environ.get("GUANGMANG_DATA_DIR", "var/embedded")).resolve()
    base_port = int(os.environ.get("GUANGMANG_BASE_PORT", "8000"))
    host = os.environ.get("GUANGMANG_HOST", "127.0.0.1")
    configure_logging("embedded", os.environ.get("LOG_LEVEL", "INFO"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    kits: dict[str, ServiceKit] = {}
    workers = []
    for entry in SERVICES:
        settings = settings_for(entry.name, data_dir, base_port)
        entry.migrate.main(settings.database_url)
        kit = kits[entry.name] = ServiceKit(settings, entry.metadata)
        replayed = replay_all(kit.sessions, kit.outbox)
        if replayed:
            log.info("%s: publishing %d outbox events again after the restart", entry.name, replayed)
        worker = kit.worker(entry.handlers(kit) if entry.handlers else [])
        worker.stop_event = stop
        workers.append(worker)
    # Every queue exists before any relay publishes: the in-memory broker drops unroutable messages.
    for worker in workers:
        worker.declare()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_ready()
    by_name = {e.name: e for e in SERVICES}
    for name in SEED_ORDER:
        if by_name[name].seed.seed(kits[name]):
            log.info("%s: demo data seeded", name)
    servers = []
    for entry in SERVICES:
        # The same create_app() gunicorn runs; logging stays the embedded process's.
        app = entry.app.create_app(kits[entry.name].settings)
        server = make_server(host, base_port + entry.port_offset, app, threaded=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, name=f"http:{entry.name}", daemon=True).start()
    configure_logging("embedded", os.environ.get("LOG_LEVEL", "INFO"))

    print(f"\nGuangmang is running: http://{host}:{base_port}/api/v1 "
          f"(OpenAPI: /api/v1/openapi.json); data in {data_dir}", flush=True)
    for role, spec in demo.load("accounts").items():
        print(f"  {role:<15} phone {spec['phone']}  password {spec['password']}", flush=True)
    print("Ctrl-C stops.", flush=True)
    stop.wait()
    for server in servers:
        server.shutdown()
    for worker in workers:
        worker.stop()
    log.info("stopped")


if __name__ == "__main__":
    main()

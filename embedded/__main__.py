"""``python -m embedded``: migrate, seed the demo street and serve every service in one process."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from werkzeug.serving import make_server

from services.activity import app as activity_app, migrate as activity_migrate, seed as activity_seed
from services.activity.handlers import build_handlers as activity_handlers
from services.activity.models import metadata as activity_metadata
from services.gateway import app as gateway_app, migrate as gateway_migrate, seed as gateway_seed
from services.gateway.models import metadata as gateway_metadata
from services.merchant import app as merchant_app, migrate as merchant_migrate, seed as merchant_seed
from services.merchant.models import metadata as merchant_metadata
from services.points import app as points_app, migrate as points_migrate
from services.points.handlers import build_handlers as points_handlers
from services.points.models import metadata as points_metadata
from shared import demo
from shared.config import Settings
from shared.logging import configure_logging
from shared.outbox import replay_all
from shared.service import ServiceKit

log = logging.getLogger("embedded")

SERVICES = {
    # name: (port offset, app module, migrate module, metadata, handlers builder, seed module)
    "gateway": (0, gateway_app, gateway_migrate, gateway_metadata, None, gateway_seed),
    "activity": (1, activity_app, activity_migrate, activity_metadata, activity_handlers, activity_seed),
    "points": (2, points_app, points_migrate, points_metadata, points_handlers, None),
    "merchant": (3, merchant_app, merchant_migrate, merchant_metadata, None, merchant_seed),
}
SEED_ORDER = ("activity", "merchant", "gateway")


def settings_for(name: str, data_dir: Path, base_port: int) -> Settings:
    base = Settings.from_env(name)
    urls = {n: f"http://127.0.0.1:{base_port + spec[0]}" for n, spec in SERVICES.items() if n != "gateway"}
    return replace(base, database_url=f"sqlite:///{data_dir / (name + '.db')}", broker_url="memory://",
                   service_urls=urls)


def main() -> None:
    data_dir = Path(os.environ.get("GUANGMANG_DATA_DIR", "var/embedded")).resolve()
    base_port = int(os.environ.get("GUANGMANG_BASE_PORT", "8000"))
    host = os.environ.get("GUANGMANG_HOST", "127.0.0.1")
    configure_logging("embedded", os.environ.get("LOG_LEVEL", "INFO"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    workers, servers, kits = [], [], {}
    for name, (offset, app_module, migrate_module, metadata, handlers, _seed) in SERVICES.items():
        settings = settings_for(name, data_dir, base_port)
        migrate_module.main(settings.database_url)
        kit = ServiceKit(settings, metadata)
        kits[name] = kit
        replayed = replay_all(kit.sessions, kit.outbox)
        if replayed:
            log.info("%s: publishing %d outbox events again after restart", name, replayed)
        worker = kit.worker(handlers(kit) if handlers else [])
        worker.stop_event = stop
        workers.append(worker)
    # Every queue exists before any relay publishes: the in-memory broker drops unroutable messages.
    for worker in workers:
        worker.declare()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_ready()
    for name in SEED_ORDER:
        if SERVICES[name][5].seed(kits[name]):
            log.info("%s: demo data seeded", name)
    for name, (offset, app_module, *_rest) in SERVICES.items():
        app = app_module.create_app(kits[name].settings)
        server = make_server(host, base_port + offset, app, threaded=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, name=f"http:{name}", daemon=True).start()

    accounts = demo.load("accounts")
    print(f"\nGuangmang is running: gateway http://{host}:{base_port}/api/v1 "
          f"(OpenAPI at /api/v1/openapi.json); data in {data_dir}", flush=True)
    for role, spec in accounts.items():
        print(f"  {role:<15} phone {spec['phone']}  password {spec['password']}", flush=True)
    print("Ctrl-C stops.", flush=True)
    stop.wait()
    for server in servers:
        server.shutdown()
    for worker in workers:
        worker.stop()
    log.info("stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()

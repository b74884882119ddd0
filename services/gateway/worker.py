"""The gateway worker process: ``python -m services.gateway.worker``."""
from __future__ import annotations

from services.gateway.models import metadata
from shared.config import Settings
from shared.service import ServiceKit, bootstrap
from shared.worker import Worker, serve_forever


def build_worker(settings: Settings | None = None) -> tuple[ServiceKit, Worker]:
    kit = bootstrap(worker=True, service="gateway", metadata=metadata, settings=settings)
    return kit, kit.worker([])  # the gateway consumes nothing; its worker relays user.registered


def main() -> None:
    serve_forever(build_worker()[1])


if __name__ == "__main__":
    main()

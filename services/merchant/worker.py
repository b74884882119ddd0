"""The merchant worker process: ``python -m services.merchant.worker``."""
from __future__ import annotations

from services.merchant.models import metadata
from shared.config import Settings
from shared.service import ServiceKit, bootstrap
from shared.worker import Worker, serve_forever


def build_worker(settings: Settings | None = None) -> tuple[ServiceKit, Worker]:
    kit = bootstrap(worker=True, service="merchant", metadata=metadata, settings=settings)
    return kit, kit.worker([])  # redemption replies arrive with the saga (a later issue)


def main() -> None:
    serve_forever(build_worker()[1])


if __name__ == "__main__":
    main()

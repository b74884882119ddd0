"""The activity worker process: ``python -m services.activity.worker``."""
from __future__ import annotations

from services.activity.handlers import build_handlers
from services.activity.models import metadata
from shared.config import Settings
from shared.service import ServiceKit, bootstrap
from shared.worker import Worker, serve_forever


def build_worker(settings: Settings | None = None) -> tuple[ServiceKit, Worker]:
    kit = bootstrap(worker=True, service="activity", metadata=metadata, settings=settings)
    return kit, kit.worker(build_handlers(kit))


def main() -> None:
    serve_forever(build_worker()[1])


if __name__ == "__main__":
    main()

"""Every service, as the composition roots see it."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from sqlalchemy import MetaData

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
from shared.bus import Subscription
from shared.config import Settings
from shared.consumer import Handler
from shared.service import ServiceKit


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    port_offset: int
    app: ModuleType
    migrate: ModuleType
    metadata: MetaData
    handlers: Callable[[ServiceKit], list[Handler]] | None
    seed: ModuleType | None

    def subscriptions(self) -> list[Subscription]:
        """The queues this service's worker consumes (no database is touched)."""
        if self.handlers is None:
            return []
        kit = ServiceKit(Settings(service=self.name, database_url="sqlite://"), self.metadata)
        return [h.subscription(self.name) for h in self.handlers(kit)]


SERVICES = (
    ServiceEntry("gateway", 0, gateway_app, gateway_migrate, gateway_metadata, None, gateway_seed),
    ServiceEntry("activity", 1, activity_app, activity_migrate, activity_metadata, activity_handlers, activity_seed),
    ServiceEntry("points", 2, points_app, points_migrate, points_metadata, points_handlers, None),
    ServiceEntry("merchant", 3, merchant_app, merchant_migrate, merchant_metadata, None, merchant_seed),
)
#: Seeding order: organisations and merchants exist before the demo accounts that point at them.
SEED_ORDER = ("activity", "merchant", "gateway")

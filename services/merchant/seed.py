"""Seed the demo Guangmang Alliance: merchants, offers and the food bank's pop-up schedule."""
from __future__ import annotations

from datetime import date, time, timedelta

from sqlalchemy import select

from services.merchant import catalog
from services.merchant.models import merchants
from shared import demo
from shared.service import ServiceKit


def seed(kit: ServiceKit) -> bool:
    """Admit the demo merchants with their offers and pop-ups; False if already seeded."""
    street = demo.load("street")
    with kit.sessions() as session:
        if session.execute(select(merchants.c.id).limit(1)).first():
            return False
        for spec in street["merchants"]:
            merchant_id = catalog.admit_merchant(kit, session, name=spec["name"], category=spec["category"],
                                                 address=spec.get("address"),
                                                 merchant_id=demo.stable_id("merchant", spec["name"]))
            for offer in spec.get("offers", []):
                catalog.publish_offer(kit, session, merchant_id=merchant_id, **offer)
            for popup in spec.get("popups", []):
                catalog.schedule_popup(session, merchant_id=merchant_id, place=popup["place"],
                                       day=date.today() + timedelta(days=popup["day_offset"]),
                                       opens_at=time.fromisoformat(popup["opens_at"]),
                                       closes_at=time.fromisoformat(popup["closes_at"]))
        session.commit()
    return True


def main() -> None:
    """``python -m services.merchant.seed``: seed the demo data into ``DATABASE_URL`` (after migrating)."""
    from services.merchant.models import metadata
    from shared.service import bootstrap
    seed(bootstrap("merchant", metadata))


if __name__ == "__main__":
    main()

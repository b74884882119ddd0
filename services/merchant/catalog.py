"""Where merchants, offers and pop-ups are created: each change writes its event to the outbox."""
from __future__ import annotations

import uuid
from datetime import date, datetime, time, timezone

from sqlalchemy.orm import Session

from services.merchant.models import merchants, offers, popups
from shared.service import ServiceKit

CATEGORIES = ("cinema", "restaurant", "car_wash", "gym", "life_service", "food_bank")
OFFER_KINDS = ("goods", "service", "discount")


def admit_merchant(kit: ServiceKit, session: Session, *, name: str, category: str, address: str | None,
                   merchant_id: str | None = None) -> str:
    """Add an active alliance merchant and announce ``merchant.joined``."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}")
    merchant_id = merchant_id or str(uuid.uuid4())
    session.execute(merchants.insert().values(id=merchant_id, name=name, category=category, address=address,
                                              status="active", created_at=datetime.now(timezone.utc)))
    kit.emit(session, "merchant.joined", {"merchant_id": merchant_id, "name": name, "category": category},
             subject=merchant_id)
    return merchant_id


def publish_offer(kit: ServiceKit, session: Session, *, merchant_id: str, title: str, kind: str, points_price: int,
                  stock: int, per_user_limit: int = 1, description: str = "") -> str:
    """Publish an offer (a redemption scene) and announce ``offer.published``."""
    if kind not in OFFER_KINDS:
        raise ValueError(f"unknown offer kind {kind!r}")
    offer_id = str(uuid.uuid4())
    session.execute(offers.insert().values(
        id=offer_id, merchant_id=merchant_id, title=title, description=description, kind=kind,
        points_price=points_price, stock=stock, per_user_limit=per_user_limit, status="published",
        created_at=datetime.now(timezone.utc)))
    kit.emit(session, "offer.published", {"offer_id": offer_id, "merchant_id": merchant_id, "title": title,
                                          "points_price": points_price, "stock": stock}, subject=offer_id)
    return offer_id


def schedule_popup(session: Session, *, merchant_id: str, place: str, day: date, opens_at: time,
                   closes_at: time) -> str:
    if closes_at <= opens_at:
        raise ValueError("a pop-up must close after it opens")
    popup_id = str(uuid.uuid4())
    session.execute(popups.insert().values(id=popup_id, merchant_id=merchant_id, place=place, day=day,
                                           opens_at=opens_at, closes_at=closes_at))
    return popup_id

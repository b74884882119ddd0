"""The merchant database: alliance merchants, offers (redemption scenes), pop-up redemption points."""
from __future__ import annotations

from sqlalchemy import (CheckConstraint, Column, Date, ForeignKey, Index, Integer, String, Table, Text,
                        Time)

from shared.db import UtcDateTime, make_metadata
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = make_metadata()

merchants = Table(
    "merchants", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(120), nullable=False),
    # cinema | restaurant | car_wash | gym | life_service | food_bank
    Column("category", String(30), nullable=False),
    Column("address", String(200), nullable=True),
    Column("status", String(12), nullable=False),  # pending | active
    Column("created_at", UtcDateTime, nullable=False),
)

offers = Table(
    "offers", metadata,
    Column("id", String(36), primary_key=True),
    Column("merchant_id", String(36), ForeignKey("merchants.id"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("kind", String(12), nullable=False),  # goods | service | discount
    Column("points_price", Integer, nullable=False),
    Column("stock", Integer, nullable=False),
    Column("per_user_limit", Integer, nullable=False, default=1),
    Column("status", String(12), nullable=False),  # draft | published | withdrawn
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("stock >= 0", name="stock_not_negative"),
    CheckConstraint("points_price > 0", name="price_positive"),
)
Index("ix_offers_merchant_id", offers.c.merchant_id)

popups = Table(
    "popups", metadata,
    Column("id", String(36), primary_key=True),
    Column("merchant_id", String(36), ForeignKey("merchants.id"), nullable=False),
    Column("place", String(120), nullable=False),
    Column("day", Date, nullable=False),
    Column("opens_at", Time, nullable=False),
    Column("closes_at", Time, nullable=False),
)
Index("ix_popups_day", popups.c.day)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

"""The gateway database: identity (users, credentials, roles, memberships) and idempotency keys."""
from __future__ import annotations

from sqlalchemy import Column, Integer, JSON, String, Table, Text, UniqueConstraint

from shared.db import BigId, UtcDateTime, make_metadata
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = make_metadata()

users = Table(
    "users", metadata,
    Column("id", String(36), primary_key=True),
    Column("phone", String(20), nullable=False, unique=True),
    Column("display_name", String(100), nullable=False),
    Column("password_hash", String(300), nullable=False),
    Column("role", String(20), nullable=False),  # resident | organizer | merchant_staff | admin
    Column("org_code", String(40), nullable=True),
    Column("merchant_id", String(36), nullable=True),
    Column("skills", JSON, nullable=False, default=list),
    Column("created_at", UtcDateTime, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("owner", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # hash of method, path and body
    Column("status", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("owner", "key", name="uq_idempotency_keys_owner_key"),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

"""The points database: a double-entry ledger (after TigerBeetle) plus outbox and inbox."""
from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, String, Table, UniqueConstraint

from shared.db import UtcDateTime, make_metadata
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = make_metadata()

accounts = Table(
    "accounts", metadata,
    Column("id", String(36), primary_key=True),
    # resident | org_issuance | merchant | charity_fund
    Column("kind", String(20), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("debits_posted", BigInteger, nullable=False, default=0),
    Column("credits_posted", BigInteger, nullable=False, default=0),
    Column("debits_pending", BigInteger, nullable=False, default=0),
    Column("credits_pending", BigInteger, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("kind", "owner", name="uq_accounts_kind_owner"),
    CheckConstraint("debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
                    name="amounts_not_negative"),
)

transfers = Table(
    "transfers", metadata,
    # The transfer id is the idempotency key: same id + same fields returns the original.
    Column("id", String(36), primary_key=True),
    Column("debit_account_id", String(36), nullable=False),
    Column("credit_account_id", String(36), nullable=False),
    Column("amount", BigInteger, nullable=False),
    # posted | pending | post_pending | void_pending
    Column("kind", String(16), nullable=False),
    Column("pending_id", String(36), nullable=True),
    # for pending transfers: pending -> posted | voided | expired
    Column("status", String(12), nullable=False),
    Column("timeout_at", UtcDateTime, nullable=True),
    Column("cause_type", String(20), nullable=False),
    Column("cause_id", String(64), nullable=False),
    Column("memo", String(200), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
)
Index("ix_transfers_debit_account_id", transfers.c.debit_account_id, transfers.c.created_at)
Index("ix_transfers_credit_account_id", transfers.c.credit_account_id, transfers.c.created_at)
Index("ix_transfers_pending_id", transfers.c.pending_id)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

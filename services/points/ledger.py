"""Where points move: the double-entry ledger's rules, after TigerBeetle.

- Every transfer debits one account and credits another; the sum over all accounts is zero.
- A transfer id is an idempotency key: the same id with the same fields returns the original;
  with different fields it is refused (:class:`TransferConflict`).
- Two-phase: a *pending* transfer reserves points (available = posted credits − posted debits −
  pending debits); it is posted once or voided once, or expires at its timeout.
- A resident's available balance never goes below zero: the debit is one conditional UPDATE
  (``... WHERE available >= amount``), not a read-check-write.
- Nothing is edited: corrections are new transfers.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.points.models import accounts, transfers

#: Accounts whose debits may never exceed their credits (the others are sources or sinks).
BOUNDED_KINDS = frozenset({"resident", "merchant", "charity_fund"})
ACCOUNT_KINDS = frozenset({"resident", "org_issuance", "merchant", "charity_fund"})
LEDGER_NAMESPACE = uuid.UUID("6f1c7a52-3c1e-4df0-9c55-1b0f8f0e7a11")


class LedgerError(Exception):
    code = "ledger_error"


class InsufficientFunds(LedgerError):
    code = "insufficient_points"


class TransferConflict(LedgerError):
    code = "transfer_conflict"


class PendingNotFound(LedgerError):
    code = "hold_not_found"


class PendingAlreadyResolved(LedgerError):
    code = "hold_already_resolved"


def transfer_id_for(cause: str) -> str:
    """A deterministic transfer id for a cause (e.g. ``activity.completed:<completion id>``)."""
    return str(uuid.uuid5(LEDGER_NAMESPACE, cause))


def account_id_for(kind: str, owner: str) -> str:
    return str(uuid.uuid5(LEDGER_NAMESPACE, f"account:{kind}:{owner}"))


@dataclass(frozen=True)
class Transfer:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    kind: str
    status: str
    cause_type: str
    cause_id: str
    pending_id: str | None = None
    #: True when this id had been recorded before and the original is returned (nothing moved now)
    replayed: bool = field(default=False, compare=False)


def open_account(session: Session, kind: str, owner: str) -> str:
    """Open (or find) the account of ``owner``; safe under concurrent calls."""
    if kind not in ACCOUNT_KINDS:
        raise ValueError(f"unknown account kind {kind!r}")
    account_id = account_id_for(kind, str(owner))
    values = dict(id=account_id, kind=kind, owner=str(owner), debits_posted=0, credits_posted=0,
                  debits_pending=0, credits_pending=0, created_at=datetime.now(timezone.utc))
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(accounts).values(**values).on_conflict_do_nothing())
    return account_id


def _existing(session: Session, transfer_id: str, fields: dict) -> Transfer | None:
    row = session.execute(select(transfers).where(transfers.c.id == transfer_id)).mappings().first()
    if row is None:
        return None
    for key, value in fields.items():
        if value is not None and row[key] != value:
            raise TransferConflict(f"transfer {transfer_id} exists with a different {key}")
    return _to_transfer(row)


def _to_transfer(row) -> Transfer:  # noqa: ANN001
    return Transfer(id=row["id"], debit_account_id=row["debit_account_id"],
                    credit_account_id=row["credit_account_id"], amount=row["amount"], kind=row["kind"],
                    status=row["status"], cause_type=row["cause_type"], cause_id=row["cause_id"],
                    pending_id=row["pending_id"], replayed=True)


def _available_at_least(amount: int):  # noqa: ANN202
    c = accounts.c
    return or_(c.kind.not_in(BOUNDED_KINDS),
               c.credits_posted - c.debits_posted - c.debits_pending >= literal(amount))


def _insert(session: Session, **values) -> Transfer:  # noqa: ANN003
    values.setdefault("pending_id", None)
    values.setdefault("timeout_at", None)
    values.setdefault("memo", None)
    session.execute(transfers.insert().values(created_at=datetime.now(timezone.utc), **values))
    return Transfer(**{k: values[k] for k in Transfer.__dataclass_fields__ if k != "replayed"})


def create_transfer(session: Session, *, transfer_id: str, debit_account_id: str, credit_account_id: str,
                    amount: int, cause_type: str, cause_id: str, pending: bool = False,
                    timeout_at: datetime | None = None, memo: str | None = None) -> Transfer:
    """Move ``amount`` (posted) or reserve it (``pending=True``); idempotent on ``transfer_id``."""
    if amount <= 0:
        raise ValueError("amount must be positive")
    if debit_account_id == credit_account_id:
        raise ValueError("debit and credit accounts must differ")
    kind = "pending" if pending else "posted"
    found = _existing(session, transfer_id, dict(debit_account_id=debit_account_id,
                                                 credit_account_id=credit_account_id, amount=amount, kind=kind))
    if found:
        return found
    debit_col, credit_col = ("debits_pending", "credits_pending") if pending else ("debits_posted", "credits_posted")
    c = accounts.c
    moved = session.execute(
        update(accounts).where(and_(c.id == debit_account_id, _available_at_least(amount)))
        .values({debit_col: getattr(c, debit_col) + amount})).rowcount
    if moved != 1:
        raise InsufficientFunds(f"account {debit_account_id} cannot cover {amount}")
    session.execute(update(accounts).where(c.id == credit_account_id)
                    .values({credit_col: getattr(c, credit_col) + amount}))
    return _insert(session, id=transfer_id, debit_account_id=debit_account_id,
                   credit_account_id=credit_account_id, amount=amount, kind=kind,
                   status="pending" if pending else "posted", timeout_at=timeout_at,
                   cause_type=cause_type, cause_id=cause_id, memo=memo)


def resolve_pending(session: Session, *, transfer_id: str, pending_id: str, post: bool,
                    cause_type: str, cause_id: str) -> Transfer:
    """Post (``post=True``) or void a pending transfer, exactly once; idempotent on ``transfer_id``."""
    kind = "post_pending" if post else "void_pending"
    found = _existing(session, transfer_id, dict(pending_id=pending_id, kind=kind))
    if found:
        return found
    new_status = "posted" if post else "voided"
    resolved = session.execute(
        update(transfers).where(and_(transfers.c.id == pending_id, transfers.c.status == "pending"))
        .values(status=new_status)).rowcount
    pending = session.execute(select(transfers).where(transfers.c.id == pending_id)).mappings().first()
    if pending is None:
        raise PendingNotFound(f"no pending transfer {pending_id}")
    if resolved != 1:
        raise PendingAlreadyResolved(f"pending transfer {pending_id} is already {pending['status']}")
    amount = pending["amount"]
    c = accounts.c
    session.execute(update(accounts).where(c.id == pending["debit_account_id"]).values(
        debits_pending=c.debits_pending - amount,
        **({"debits_posted": c.debits_posted + amount} if post else {})))
    session.execute(update(accounts).where(c.id == pending["credit_account_id"]).values(
        credits_pending=c.credits_pending - amount,
        **({"credits_posted": c.credits_posted + amount} if post else {})))
    return _insert(session, id=transfer_id, debit_account_id=pending["debit_account_id"],
                   credit_account_id=pending["credit_account_id"], amount=amount, kind=kind,
                   status="posted" if post else "voided", pending_id=pending_id,
                   cause_type=cause_type, cause_id=cause_id)


@dataclass(frozen=True)
class Balance:
    posted: int
    pending_debits: int
    pending_credits: int

    @property
    def available(self) -> int:
        return self.posted - self.pending_debits


def balance(session: Session, account_id: str) -> Balance | None:
    row = session.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
    if row is None:
        return None
    return Balance(posted=row["credits_posted"] - row["debits_posted"],
                   pending_debits=row["debits_pending"], pending_credits=row["credits_pending"])


def history(session: Session, account_id: str, *, limit: int, offset: int) -> tuple[list[dict], int]:
    """The account's history, newest first, each line signed from the account's point of view.

    A hold appears once, as its pending transfer whose status says what became of it (pending,
    posted, voided, expired); the post/void records that resolved it are not separate lines. So
    the posted lines add up to the posted balance and the pending ones to what is held.
    """
    t = transfers.c
    involved = and_(or_(t.debit_account_id == account_id, t.credit_account_id == account_id),
                    t.kind.in_(("posted", "pending")))
    total = session.execute(select(func.count()).select_from(transfers).where(involved)).scalar_one()
    rows = session.execute(select(transfers).where(involved).order_by(t.created_at.desc(), t.id)
                           .limit(limit).offset(offset)).mappings().all()
    lines = []
    for row in rows:
        outgoing = row["debit_account_id"] == account_id
        lines.append({
            "transfer_id": row["id"], "amount": -row["amount"] if outgoing else row["amount"],
            "kind": row["kind"], "status": row["status"], "cause_type": row["cause_type"],
            "cause_id": row["cause_id"], "memo": row["memo"], "created_at": row["created_at"],
        })
    return lines, total

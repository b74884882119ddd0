"""Unit tests of the double-entry ledger (``services/points/ledger.py``) on a SQLite file."""
from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.points import ledger
from services.points.ledger import (Balance, InsufficientFunds, PendingAlreadyResolved, PendingNotFound,
                                    TransferConflict, balance, create_transfer, history, open_account,
                                    resolve_pending, transfer_id_for)
from services.points.models import accounts, metadata, transfers
from shared.db import make_engine, make_session_factory


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'points.db'}")
    metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def session(sessions):
    with sessions() as s:
        yield s


@pytest.fixture
def book(session: Session) -> dict[str, str]:
    """The usual accounts: an issuing organisation, a resident, a merchant."""
    return {
        "issuer": open_account(session, "org_issuance", "tianfu-01"),
        "resident": open_account(session, "resident", "u-1"),
        "merchant": open_account(session, "merchant", "m-1"),
    }


def tid() -> str:
    return str(uuid.uuid4())


def credit(session: Session, book: dict[str, str], amount: int, transfer_id: str | None = None) -> ledger.Transfer:
    """Issue ``amount`` points to the resident, as an activity completion would."""
    transfer_id = transfer_id or tid()
    return create_transfer(session, transfer_id=transfer_id, debit_account_id=book["issuer"],
                           credit_account_id=book["resident"], amount=amount,
                           cause_type="activity", cause_id=f"completion-{transfer_id[:8]}")


def spend(session: Session, book: dict[str, str], amount: int, *, transfer_id: str | None = None,
          pending: bool = False) -> ledger.Transfer:
    """Move ``amount`` from the resident to the merchant (a redemption)."""
    return create_transfer(session, transfer_id=transfer_id or tid(), debit_account_id=book["resident"],
                           credit_account_id=book["merchant"], amount=amount, cause_type="redemption",
                           cause_id="r-1", pending=pending)


def posted(session: Session, account_id: str) -> int:
    return balance(session, account_id).posted


def ledger_sum(session: Session) -> int:
    c = accounts.c
    return session.execute(select(func.sum(c.credits_posted - c.debits_posted))).scalar_one()


def transfer_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(transfers)).scalar_one()


# ---- accounts ----------------------------------------------------------------------------------

def test_open_account_is_idempotent(session: Session) -> None:
    first = open_account(session, "resident", "u-9")
    second = open_account(session, "resident", "u-9")
    assert first == second == ledger.account_id_for("resident", "u-9")
    assert session.execute(select(func.count()).select_from(accounts)).scalar_one() == 1
    assert balance(session, first) == Balance(posted=0, pending_debits=0, pending_credits=0)


def test_accounts_of_different_kinds_or_owners_differ(session: Session) -> None:
    ids = {open_account(session, "resident", "u-1"), open_account(session, "resident", "u-2"),
           open_account(session, "merchant", "u-1")}
    assert len(ids) == 3


def test_an_unknown_account_kind_is_refused(session: Session) -> None:
    with pytest.raises(ValueError):
        open_account(session, "wallet", "u-1")


def test_an_unknown_account_has_no_balance(session: Session) -> None:
    assert balance(session, str(uuid.uuid4())) is None


def test_transfer_ids_for_a_cause_are_deterministic() -> None:
    assert transfer_id_for("activity.completed:c-1") == transfer_id_for("activity.completed:c-1")
    assert transfer_id_for("activity.completed:c-1") != transfer_id_for("activity.completed:c-2")


# ---- posted transfers ------------------------------------------------------------------------

def test_a_posted_transfer_moves_balances_and_the_ledger_sums_to_zero(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    spend(session, book, 30)
    assert posted(session, book["resident"]) == 70
    assert posted(session, book["merchant"]) == 30
    assert posted(session, book["issuer"]) == -100  # the issuing account is a source
    assert ledger_sum(session) == 0


def test_the_ledger_survives_a_commit(sessions, book, session: Session) -> None:  # noqa: ANN001
    credit(session, book, 40)
    session.commit()
    with sessions() as other:
        assert posted(other, book["resident"]) == 40
        assert ledger_sum(other) == 0


def test_the_same_transfer_twice_returns_the_original_and_moves_once(session: Session, book) -> None:  # noqa: ANN001
    transfer_id = tid()
    first = credit(session, book, 25, transfer_id)
    again = credit(session, book, 25, transfer_id)
    assert again == first
    assert posted(session, book["resident"]) == 25
    assert transfer_count(session) == 1


def test_a_retry_succeeds_even_when_the_funds_are_now_spent(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 50)
    transfer_id = tid()
    first = spend(session, book, 50, transfer_id=transfer_id)
    assert spend(session, book, 50, transfer_id=transfer_id) == first
    assert posted(session, book["resident"]) == 0
    assert posted(session, book["merchant"]) == 50


def test_the_same_transfer_id_with_another_amount_is_a_conflict(session: Session, book) -> None:  # noqa: ANN001
    transfer_id = tid()
    credit(session, book, 25, transfer_id)
    with pytest.raises(TransferConflict) as exc_info:
        credit(session, book, 26, transfer_id)
    assert exc_info.value.code == "transfer_conflict"
    assert posted(session, book["resident"]) == 25


def test_the_same_transfer_id_with_other_accounts_is_a_conflict(session: Session, book) -> None:  # noqa: ANN001
    transfer_id = tid()
    credit(session, book, 25, transfer_id)
    with pytest.raises(TransferConflict):
        create_transfer(session, transfer_id=transfer_id, debit_account_id=book["issuer"],
                        credit_account_id=book["merchant"], amount=25, cause_type="activity", cause_id="x")
    assert posted(session, book["merchant"]) == 0


def test_the_same_transfer_id_as_pending_is_a_conflict(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    transfer_id = tid()
    spend(session, book, 10, transfer_id=transfer_id)
    with pytest.raises(TransferConflict):
        spend(session, book, 10, transfer_id=transfer_id, pending=True)
    assert balance(session, book["resident"]) == Balance(posted=90, pending_debits=0, pending_credits=0)


def test_a_resident_cannot_go_below_zero(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 40)
    before = (balance(session, book["resident"]), balance(session, book["merchant"]))
    with pytest.raises(InsufficientFunds) as exc_info:
        spend(session, book, 41)
    assert exc_info.value.code == "insufficient_points"
    assert (balance(session, book["resident"]), balance(session, book["merchant"])) == before
    assert transfer_count(session) == 1
    spend(session, book, 40)  # exactly the balance is fine
    assert posted(session, book["resident"]) == 0


@pytest.mark.parametrize("kind", ["merchant", "charity_fund"])
def test_other_bounded_accounts_cannot_go_below_zero_either(session: Session, kind: str) -> None:
    bounded = open_account(session, kind, "owner-1")
    other = open_account(session, "resident", "u-5")
    with pytest.raises(InsufficientFunds):
        create_transfer(session, transfer_id=tid(), debit_account_id=bounded, credit_account_id=other,
                        amount=1, cause_type="refund", cause_id="x")
    assert posted(session, other) == 0


@pytest.mark.parametrize("amount", [0, -5])
def test_a_transfer_must_move_a_positive_amount(session: Session, book, amount: int) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        credit(session, book, amount)
    assert transfer_count(session) == 0


def test_a_transfer_must_move_between_two_accounts(session: Session, book) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        create_transfer(session, transfer_id=tid(), debit_account_id=book["issuer"],
                        credit_account_id=book["issuer"], amount=5, cause_type="activity", cause_id="x")


# ---- pending transfers (holds) ---------------------------------------------------------------

def test_a_pending_hold_reduces_available_but_not_posted(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    hold = spend(session, book, 30, pending=True)
    assert (hold.kind, hold.status) == ("pending", "pending")
    resident = balance(session, book["resident"])
    assert (resident.posted, resident.pending_debits, resident.available) == (100, 30, 70)
    merchant = balance(session, book["merchant"])
    assert (merchant.posted, merchant.pending_credits) == (0, 30)
    assert ledger_sum(session) == 0


def test_a_hold_counts_against_what_can_still_be_spent(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    spend(session, book, 30, pending=True)
    with pytest.raises(InsufficientFunds):
        spend(session, book, 71)
    with pytest.raises(InsufficientFunds):
        spend(session, book, 71, pending=True)
    spend(session, book, 70)
    assert balance(session, book["resident"]).available == 0


def test_posting_a_hold_moves_it_once(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    hold = spend(session, book, 30, pending=True)
    post_id = tid()
    post = resolve_pending(session, transfer_id=post_id, pending_id=hold.id, post=True,
                           cause_type="redemption", cause_id="r-1")
    assert (post.kind, post.status, post.amount, post.pending_id) == ("post_pending", "posted", 30, hold.id)
    assert balance(session, book["resident"]) == Balance(posted=70, pending_debits=0, pending_credits=0)
    assert balance(session, book["merchant"]) == Balance(posted=30, pending_debits=0, pending_credits=0)
    assert ledger_sum(session) == 0

    # the same post delivered again (same transfer id) is the original, not a second move
    again = resolve_pending(session, transfer_id=post_id, pending_id=hold.id, post=True,
                            cause_type="redemption", cause_id="r-1")
    assert again == post
    assert posted(session, book["resident"]) == 70

    # a different post or void of the resolved hold is refused
    for post_again in (True, False):
        with pytest.raises(PendingAlreadyResolved) as exc_info:
            resolve_pending(session, transfer_id=tid(), pending_id=hold.id, post=post_again,
                            cause_type="redemption", cause_id="r-1")
        assert exc_info.value.code == "hold_already_resolved"
    assert balance(session, book["resident"]) == Balance(posted=70, pending_debits=0, pending_credits=0)
    assert balance(session, book["merchant"]) == Balance(posted=30, pending_debits=0, pending_credits=0)


def test_voiding_a_hold_returns_the_points_once(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    hold = spend(session, book, 30, pending=True)
    void_id = tid()
    void = resolve_pending(session, transfer_id=void_id, pending_id=hold.id, post=False,
                           cause_type="redemption", cause_id="r-1")
    assert (void.kind, void.status) == ("void_pending", "voided")
    assert balance(session, book["resident"]) == Balance(posted=100, pending_debits=0, pending_credits=0)
    assert balance(session, book["merchant"]) == Balance(posted=0, pending_debits=0, pending_credits=0)
    assert resolve_pending(session, transfer_id=void_id, pending_id=hold.id, post=False,
                           cause_type="redemption", cause_id="r-1") == void
    with pytest.raises(PendingAlreadyResolved):
        resolve_pending(session, transfer_id=tid(), pending_id=hold.id, post=True,
                        cause_type="redemption", cause_id="r-1")
    assert balance(session, book["resident"]).available == 100
    assert posted(session, book["merchant"]) == 0


def test_the_same_resolution_id_for_the_other_outcome_is_a_conflict(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    hold = spend(session, book, 30, pending=True)
    resolution_id = tid()
    resolve_pending(session, transfer_id=resolution_id, pending_id=hold.id, post=False,
                    cause_type="redemption", cause_id="r-1")
    with pytest.raises(TransferConflict):
        resolve_pending(session, transfer_id=resolution_id, pending_id=hold.id, post=True,
                        cause_type="redemption", cause_id="r-1")
    assert posted(session, book["merchant"]) == 0


def test_resolving_an_unknown_hold_is_not_found(session: Session) -> None:
    with pytest.raises(PendingNotFound) as exc_info:
        resolve_pending(session, transfer_id=tid(), pending_id=str(uuid.uuid4()), post=True,
                        cause_type="redemption", cause_id="r-1")
    assert exc_info.value.code == "hold_not_found"


def test_a_posted_transfer_is_not_a_hold(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    plain = spend(session, book, 10)
    with pytest.raises(PendingAlreadyResolved):
        resolve_pending(session, transfer_id=tid(), pending_id=plain.id, post=False,
                        cause_type="redemption", cause_id="r-1")
    assert posted(session, book["resident"]) == 90


# ---- history -----------------------------------------------------------------------------------

def test_history_is_signed_from_the_accounts_view_with_its_cause(session: Session, book) -> None:  # noqa: ANN001
    earned = credit(session, book, 100)
    spent = spend(session, book, 30)
    lines, total = history(session, book["resident"], limit=10, offset=0)
    assert total == 2
    by_id = {line["transfer_id"]: line for line in lines}
    assert by_id[earned.id]["amount"] == 100
    assert (by_id[earned.id]["cause_type"], by_id[earned.id]["cause_id"]) == ("activity", earned.cause_id)
    assert by_id[spent.id]["amount"] == -30
    assert (by_id[spent.id]["cause_type"], by_id[spent.id]["cause_id"]) == ("redemption", "r-1")
    assert all(line["kind"] == "posted" and line["status"] == "posted" for line in lines)
    assert [line["transfer_id"] for line in lines] == [spent.id, earned.id]  # newest first

    merchant_lines, merchant_total = history(session, book["merchant"], limit=10, offset=0)
    assert merchant_total == 1
    assert [(line["transfer_id"], line["amount"]) for line in merchant_lines] == [(spent.id, 30)]


def test_history_pages(session: Session, book) -> None:  # noqa: ANN001
    made = [credit(session, book, n) for n in range(1, 6)]
    first, total = history(session, book["resident"], limit=2, offset=0)
    rest, _ = history(session, book["resident"], limit=10, offset=2)
    assert total == 5
    assert len(first) == 2 and len(rest) == 3
    seen = [line["transfer_id"] for line in first + rest]
    assert sorted(seen) == sorted(t.id for t in made)
    stamps = [line["created_at"] for line in first + rest]
    assert all(isinstance(s, datetime) for s in stamps)
    assert stamps == sorted(stamps, reverse=True)


def test_history_shows_holds_with_their_status(session: Session, book) -> None:  # noqa: ANN001
    credit(session, book, 100)
    hold = spend(session, book, 30, pending=True)
    void = resolve_pending(session, transfer_id=tid(), pending_id=hold.id, post=False,
                           cause_type="redemption", cause_id="r-1")
    posted_hold = spend(session, book, 20, pending=True)
    resolve_pending(session, transfer_id=tid(), pending_id=posted_hold.id, post=True,
                    cause_type="redemption", cause_id="r-2")
    lines, total = history(session, book["resident"], limit=10, offset=0)
    # a hold is one line whose status says what became of it; its post/void record is not a line
    assert total == 3 and void.id not in {line["transfer_id"] for line in lines}
    by_id = {line["transfer_id"]: line for line in lines}
    assert (by_id[hold.id]["kind"], by_id[hold.id]["status"], by_id[hold.id]["amount"]) == ("pending", "voided", -30)
    assert (by_id[posted_hold.id]["status"], by_id[posted_hold.id]["amount"]) == ("posted", -20)
    # the lines that count add up to the posted balance
    counted = sum(line["amount"] for line in lines if line["status"] == "posted")
    assert counted == balance(session, book["resident"]).posted == 80


def test_an_account_without_transfers_has_an_empty_history(session: Session, book) -> None:  # noqa: ANN001
    assert history(session, book["merchant"], limit=10, offset=0) == ([], 0)

"""Events the points service consumes, and the ledger effects they have."""
from __future__ import annotations

from sqlalchemy.orm import Session

from services.points import ledger
from shared.consumer import Handler
from shared.events import Event
from shared.service import ServiceKit


def build_handlers(kit: ServiceKit) -> list[Handler]:
    """The points service's handlers; each runs inside the inbox transaction."""

    def open_account(session: Session, event: Event) -> None:
        ledger.open_account(session, "resident", str(event.data["user_id"]))

    def credit(session: Session, *, user_id: str, org_code: str, amount: int, cause_type: str,
               cause_id: str, cause_key: str, memo: str) -> None:
        # Open both accounts on demand: a completion may arrive before user.registered.
        resident = ledger.open_account(session, "resident", user_id)
        issuer = ledger.open_account(session, "org_issuance", org_code)
        transfer = ledger.create_transfer(
            session, transfer_id=ledger.transfer_id_for(cause_key), debit_account_id=issuer,
            credit_account_id=resident, amount=amount, cause_type=cause_type, cause_id=cause_id, memo=memo)
        if transfer.replayed:  # the same cause under a new envelope: credited and announced already
            return
        now = ledger.balance(session, resident)
        kit.emit(session, "points.credited", {
            "transfer_id": transfer.id, "user_id": user_id, "amount": amount, "cause_type": cause_type,
            "cause_id": cause_id, "balance": now.posted if now else amount,
        }, subject=resident)

    def credit_completion(session: Session, event: Event) -> None:
        data = event.data
        if data["points"] <= 0:
            return
        credit(session, user_id=str(data["user_id"]), org_code=data["org_code"], amount=data["points"],
               cause_type="activity", cause_id=str(data["activity_id"]),
               cause_key=f"activity.completed:{data['completion_id']}", memo="volunteer activity completed")

    def credit_award(session: Session, event: Event) -> None:
        data = event.data
        if data["points"] <= 0:
            return
        credit(session, user_id=str(data["user_id"]), org_code=data["org_code"], amount=data["points"],
               cause_type="award", cause_id=str(data["award_id"]),
               cause_key=f"award.granted:{data['award_id']}:{data['user_id']}", memo=data["category"])

    return [
        Handler("open_account", ("user.registered",), open_account),
        Handler("credit_completion", ("activity.completed",), credit_completion),
        Handler("credit_award", ("award.granted",), credit_award),
    ]

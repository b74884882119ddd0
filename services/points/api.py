"""The points service's HTTP API (called by the gateway with an internal token)."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from services.points import ledger
from shared.auth import current_principal
from shared.service import kit

blp = Blueprint("points", __name__, description="Balances and history")


class BalanceOut(Schema):
    user_id = fields.Str()
    posted = fields.Int(metadata={"description": "posted credits − posted debits"})
    held = fields.Int(metadata={"description": "points reserved by pending redemptions"})
    available = fields.Int(metadata={"description": "posted − held: what can be spent now"})


class PageArgs(Schema):
    page = fields.Int(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Int(load_default=20, validate=validate.Range(min=1, max=100))


class TransactionOut(Schema):
    transfer_id = fields.Str()
    amount = fields.Int(metadata={"description": "signed: + credited to you, − debited"})
    kind = fields.Str()
    status = fields.Str()
    cause_type = fields.Str(metadata={"description": "activity, award, redemption, donation"})
    cause_id = fields.Str()
    memo = fields.Str(allow_none=True)
    created_at = fields.DateTime()


class TransactionPage(Schema):
    items = fields.List(fields.Nested(TransactionOut))
    page = fields.Int()
    page_size = fields.Int()
    total = fields.Int()


@blp.route("/accounts/me/balance")
class MyBalance(MethodView):
    @blp.response(200, BalanceOut)
    def get(self):
        user_id = current_principal().user_id
        with kit().sessions() as session:
            bal = ledger.balance(session, ledger.account_id_for("resident", user_id))
        if bal is None:  # account not opened yet (user.registered still in flight): zero
            return {"user_id": user_id, "posted": 0, "held": 0, "available": 0}
        return {"user_id": user_id, "posted": bal.posted, "held": bal.pending_debits, "available": bal.available}


@blp.route("/accounts/me/transactions")
class MyTransactions(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, TransactionPage)
    def get(self, args):
        user_id = current_principal().user_id
        with kit().sessions() as session:
            items, total = ledger.history(session, ledger.account_id_for("resident", user_id),
                                          limit=args["page_size"], offset=(args["page"] - 1) * args["page_size"])
        return {"items": items, "page": args["page"], "page_size": args["page_size"], "total": total}

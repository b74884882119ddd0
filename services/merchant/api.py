"""The merchant service's HTTP API (called by the gateway with an internal token)."""
from __future__ import annotations

from datetime import date

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import func, select

from services.merchant.models import merchants, offers, popups
from shared.service import kit
from shared.web import ApiError

blp = Blueprint("merchant", __name__, description="The Guangmang Alliance: merchants, offers, pop-ups")


class PageArgs(Schema):
    page = fields.Int(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Int(load_default=20, validate=validate.Range(min=1, max=100))


class MerchantOut(Schema):
    id = fields.Str()
    name = fields.Str()
    category = fields.Str()
    address = fields.Str(allow_none=True)
    status = fields.Str()


class OfferOut(Schema):
    id = fields.Str()
    merchant_id = fields.Str()
    merchant_name = fields.Str()
    title = fields.Str()
    description = fields.Str()
    kind = fields.Str()
    points_price = fields.Int()
    stock = fields.Int()
    per_user_limit = fields.Int()


class PopupOut(Schema):
    id = fields.Str()
    merchant_id = fields.Str()
    merchant_name = fields.Str()
    place = fields.Str()
    day = fields.Date()
    opens_at = fields.Time()
    closes_at = fields.Time()


class OfferQuery(PageArgs):
    merchant_id = fields.Str(load_default=None)
    max_points = fields.Int(load_default=None, validate=validate.Range(min=1))


class PopupQuery(PageArgs):
    since = fields.Date(load_default=None, metadata={"description": "default: today"})


def _page(Out: type[Schema]) -> type[Schema]:
    return Schema.from_dict({"items": fields.List(fields.Nested(Out)), "page": fields.Int(),
                             "page_size": fields.Int(), "total": fields.Int()}, name=f"{Out.__name__}Page")


def _paged(session, stmt, args) -> dict:  # noqa: ANN001
    total = session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = session.execute(stmt.limit(args["page_size"]).offset((args["page"] - 1) * args["page_size"])).mappings()
    return {"items": [dict(r) for r in rows], "page": args["page"], "page_size": args["page_size"], "total": total}


@blp.route("/merchants")
class MerchantList(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, _page(MerchantOut))
    def get(self, args):
        with kit().sessions() as session:
            return _paged(session, select(merchants).where(merchants.c.status == "active")
                          .order_by(merchants.c.name), args)


@blp.route("/merchants/<merchant_id>")
class MerchantItem(MethodView):
    @blp.response(200, MerchantOut)
    def get(self, merchant_id):
        with kit().sessions() as session:
            row = session.execute(select(merchants).where(merchants.c.id == merchant_id)).mappings().first()
        if row is None:
            raise ApiError(404, "merchant_not_found", "No such merchant.")
        return dict(row)


@blp.route("/offers")
class OfferList(MethodView):
    @blp.arguments(OfferQuery, location="query")
    @blp.response(200, _page(OfferOut))
    def get(self, args):
        stmt = (select(offers, merchants.c.name.label("merchant_name"))
                .join(merchants, merchants.c.id == offers.c.merchant_id)
                .where(offers.c.status == "published", merchants.c.status == "active"))
        if args["merchant_id"]:
            stmt = stmt.where(offers.c.merchant_id == args["merchant_id"])
        if args["max_points"]:
            stmt = stmt.where(offers.c.points_price <= args["max_points"])
        with kit().sessions() as session:
            return _paged(session, stmt.order_by(offers.c.points_price, offers.c.id), args)


@blp.route("/popups")
class PopupList(MethodView):
    @blp.arguments(PopupQuery, location="query")
    @blp.response(200, _page(PopupOut))
    def get(self, args):
        since = args["since"] or date.today()
        stmt = (select(popups, merchants.c.name.label("merchant_name"))
                .join(merchants, merchants.c.id == popups.c.merchant_id)
                .where(popups.c.day >= since).order_by(popups.c.day, popups.c.opens_at))
        with kit().sessions() as session:
            return _paged(session, stmt, args)

"""The public API under ``/api/v1``: authentication, aggregated screens, and the routes frontend
apps build against, proxied to the internal services with a short-lived internal token."""
from __future__ import annotations

import contextvars
import functools
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable

from flask import current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.gateway import identity
from services.gateway.clients import Services, ServiceUnavailable
from services.gateway.models import idempotency_keys, users
from shared.auth import SYSTEM, Principal, bearer_token, issue_user_token, verify_user_token
from shared.service import ServiceKit, kit
from shared.web import ApiError

blp = Blueprint("public", __name__, url_prefix="/api/v1", description="The Guangmang public API")

IDEMPOTENCY_HEADER = "Idempotency-Key"


def services() -> Services:
    return current_app.extensions["guangmang.services"]


# ---- authentication ------------------------------------------------------------------------

def current_user() -> Principal:
    if "user" not in g:
        token = bearer_token()
        if not token:
            raise ApiError(401, "unauthenticated", "Sign in first: send 'Authorization: Bearer <token>'.")
        g.user = verify_user_token(kit().settings.jwt_secret, token)
    return g.user


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        current_user()
        return view(*args, **kwargs)
    return wrapper


def idempotent(view: Callable) -> Callable:
    """Replay the stored response when a mutating call repeats its ``Idempotency-Key``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key:
            return view(*args, **kwargs)
        if len(key) > 200:
            raise ApiError(422, "idempotency_key_invalid", "Idempotency-Key is at most 200 characters.")
        owner = g.user.user_id if "user" in g else f"anonymous:{request.remote_addr}"
        fingerprint = hashlib.sha256(b"|".join([request.method.encode(), request.path.encode(),
                                                request.get_data()])).hexdigest()
        t = idempotency_keys.c
        with kit().sessions() as session:
            row = session.execute(select(idempotency_keys).where(t.owner == owner, t.key == key)).mappings().first()
        if row is not None:
            if row["fingerprint"] != fingerprint:
                raise ApiError(422, "idempotency_key_reused", "This Idempotency-Key was used for another request.")
            return current_app.response_class(row["body"], status=row["status"], mimetype="application/json",
                                              headers={"Idempotent-Replayed": "true"})
        response = current_app.make_response(view(*args, **kwargs))
        if response.status_code < 500:
            try:
                with kit().sessions() as session:
                    session.execute(idempotency_keys.insert().values(
                        owner=owner, key=key, fingerprint=fingerprint, status=response.status_code,
                        body=response.get_data(as_text=True), created_at=datetime.now(timezone.utc)))
                    session.commit()
            except IntegrityError:  # a concurrent request with the same key stored first
                pass
        return response
    return wrapper


# ---- schemas -------------------------------------------------------------------------------

class RegisterIn(Schema):
    phone = fields.Str(required=True, metadata={"example": "13800000001"})
    password = fields.Str(required=True, load_only=True, validate=validate.Length(max=200))
    display_name = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    community = fields.Str(load_default=None, allow_none=True, metadata={"description": "org code, e.g. haike"})
    skills = fields.List(fields.Str(validate=validate.Length(max=40)), load_default=list,
                         validate=validate.Length(max=20))


class LoginIn(Schema):
    phone = fields.Str(required=True)
    password = fields.Str(required=True, load_only=True)


class UserOut(Schema):
    id = fields.Str()
    phone = fields.Str()
    display_name = fields.Str()
    role = fields.Str()
    org_code = fields.Str(allow_none=True)
    merchant_id = fields.Str(allow_none=True)
    skills = fields.List(fields.Str())


class TokenOut(Schema):
    token = fields.Str()
    token_type = fields.Str()
    expires_in = fields.Int()
    user = fields.Nested(UserOut)


class PageArgs(Schema):
    page = fields.Int(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Int(load_default=20, validate=validate.Range(min=1, max=100))


class ActivityQuery(PageArgs):
    status = fields.Str(load_default=None, validate=validate.OneOf(["draft", "published", "completed", "cancelled"]))
    org_code = fields.Str(load_default=None)
    skill = fields.Str(load_default=None)
    mine = fields.Bool(load_default=False)
    upcoming = fields.Bool(load_default=False)


class ActivityIn(Schema):
    org_code = fields.Str(required=True)
    title = fields.Str(required=True, validate=validate.Length(min=2, max=200))
    description = fields.Str(load_default="", validate=validate.Length(max=5000))
    location = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=200))
    skills = fields.List(fields.Str(validate=validate.Length(max=40)), load_default=list)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    capacity = fields.Int(required=True, validate=validate.Range(min=1, max=10000))
    points = fields.Int(required=True, validate=validate.Range(min=0, max=1000))


class ActivityOut(Schema):
    id = fields.Str()
    org_code = fields.Str()
    title = fields.Str()
    description = fields.Str()
    location = fields.Str(allow_none=True)
    skills = fields.List(fields.Str())
    starts_at = fields.Str()
    ends_at = fields.Str()
    capacity = fields.Int()
    signed_up = fields.Int()
    points = fields.Int()
    hours = fields.Float()
    status = fields.Str()
    cancel_reason = fields.Str(allow_none=True)
    my_signup = fields.Str(allow_none=True)


def page_of(item: type[Schema], name: str) -> type[Schema]:
    return Schema.from_dict({"items": fields.List(fields.Nested(item)), "page": fields.Int(),
                             "page_size": fields.Int(), "total": fields.Int()}, name=name)


class CancelIn(Schema):
    reason = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=300))


class CompleteIn(Schema):
    participants = fields.List(fields.Str(), load_default=None, allow_none=True)


class SignupOut(Schema):
    activity_id = fields.Str()
    user_id = fields.Str()
    status = fields.Str()


class CompletionOut(Schema):
    activity_id = fields.Str()
    status = fields.Str()
    completed = fields.List(fields.Str())


class BalanceOut(Schema):
    user_id = fields.Str()
    posted = fields.Int()
    held = fields.Int()
    available = fields.Int()


class TransactionOut(Schema):
    transfer_id = fields.Str()
    amount = fields.Int()
    kind = fields.Str()
    status = fields.Str()
    cause_type = fields.Str()
    cause_id = fields.Str()
    memo = fields.Str(allow_none=True)
    created_at = fields.Str()


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


class OfferQuery(PageArgs):
    merchant_id = fields.Str(load_default=None)
    max_points = fields.Int(load_default=None, validate=validate.Range(min=1))


class PopupOut(Schema):
    id = fields.Str()
    merchant_id = fields.Str()
    merchant_name = fields.Str()
    place = fields.Str()
    day = fields.Str()
    opens_at = fields.Str()
    closes_at = fields.Str()


class HomeOut(Schema):
    user = fields.Nested(UserOut)
    balance = fields.Nested(BalanceOut, allow_none=True)
    my_upcoming_activities = fields.List(fields.Nested(ActivityOut), allow_none=True)
    recommended_activities = fields.List(fields.Nested(ActivityOut), allow_none=True)
    nearby_popups = fields.List(fields.Nested(PopupOut), allow_none=True)
    offers = fields.List(fields.Nested(OfferOut), allow_none=True)
    unavailable = fields.List(fields.Str(), metadata={"description": "sections whose service did not answer"})


# ---- auth and me ---------------------------------------------------------------------------

def _user_out(row) -> dict:  # noqa: ANN001
    return {k: row[k] for k in ("id", "phone", "display_name", "role", "org_code", "merchant_id", "skills")}


def _principal(row) -> Principal:  # noqa: ANN001
    return Principal(user_id=row["id"], role=row["role"], org_code=row["org_code"], merchant_id=row["merchant_id"])


def _token(row) -> dict:  # noqa: ANN001
    token = issue_user_token(kit().settings.jwt_secret, _principal(row))
    return {"token": token, "token_type": "Bearer", "expires_in": 3600, "user": _user_out(row)}


def create_user(k: ServiceKit, *, phone: str, password: str, display_name: str, role: str = "resident",
                org_code: str | None = None, merchant_id: str | None = None, skills: list[str] | None = None,
                user_id: str | None = None) -> dict:
    """Create a user and write ``user.registered`` to the outbox in the same transaction."""
    problems = identity.registration_problems(phone, password, display_name)
    if problems:
        raise ApiError(422, "validation_failed", "The registration is not valid; see details.", {"fields": problems})
    now = datetime.now(timezone.utc)
    row = {"id": user_id or str(uuid.uuid4()), "phone": phone, "display_name": display_name.strip(),
           "password_hash": identity.hash_password(password), "role": role, "org_code": org_code,
           "merchant_id": merchant_id, "skills": list(skills or []), "created_at": now}
    with k.sessions() as session:
        try:
            session.execute(users.insert().values(**row))
            k.emit(session, "user.registered", {
                "user_id": row["id"], "display_name": row["display_name"], "role": role, "org_code": org_code,
                "merchant_id": merchant_id, "skills": row["skills"], "registered_at": now,
            }, subject=row["id"])
            session.commit()
        except IntegrityError:
            session.rollback()
            raise ApiError(409, "phone_taken", "This phone number is already registered.") from None
    return row


@blp.route("/auth/register")
class Register(MethodView):
    @idempotent
    @blp.arguments(RegisterIn)
    @blp.response(201, TokenOut)
    def post(self, data):
        """One-step registration of a resident (一键注册)."""
        if data["community"]:
            try:
                org = services().activity.call("GET", f"/orgs/{data['community']}", SYSTEM)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                raise ApiError(422, "unknown_community", f"No community {data['community']!r}.") from None
            if org.get("kind") != "community":
                raise ApiError(422, "not_a_community", "Pick one of the street's communities.")
        row = create_user(kit(), phone=data["phone"], password=data["password"], display_name=data["display_name"],
                          org_code=data["community"], skills=data["skills"])
        return _token(row)


@blp.route("/auth/login")
class Login(MethodView):
    @blp.arguments(LoginIn)
    @blp.response(200, TokenOut)
    def post(self, data):
        with kit().sessions() as session:
            row = session.execute(select(users).where(users.c.phone == data["phone"])).mappings().first()
        if row is None or not identity.verify_password(data["password"], row["password_hash"]):
            raise ApiError(401, "bad_credentials", "Phone number or password is wrong.")
        return _token(row)


def _me_row() -> dict:
    with kit().sessions() as session:
        row = session.execute(select(users).where(users.c.id == current_user().user_id)).mappings().first()
    if row is None:
        raise ApiError(401, "unknown_user", "This account no longer exists.")
    return row


@blp.route("/me")
class Me(MethodView):
    @login_required
    @blp.response(200, UserOut)
    def get(self):
        return _user_out(_me_row())


# ---- home: one aggregated screen that degrades per section ---------------------------------

@blp.route("/home")
class Home(MethodView):
    @login_required
    @blp.response(200, HomeOut)
    def get(self):
        """Balance, my upcoming activities, recommendations, nearby pop-ups and offers.

        A section whose service does not answer is null and named in ``unavailable``; the rest
        of the screen still returns."""
        me = current_user()
        svc = services()
        calls = {
            "balance": (svc.points, "/accounts/me/balance", None),
            "my_upcoming_activities": (svc.activity, "/activities", {"mine": "true", "upcoming": "true", "page_size": 5}),
            "recommended_activities": (svc.activity, "/activities", {"upcoming": "true", "page_size": 10}),
            "nearby_popups": (svc.merchant, "/popups", {"page_size": 5}),
            "offers": (svc.merchant, "/offers", {"page_size": 5}),
        }
        app = current_app._get_current_object()  # type: ignore[attr-defined]

        def fetch(client, path, params):  # noqa: ANN001, ANN202
            with app.app_context():
                return client.call("GET", path, me, params=params)

        results: dict[str, Any] = {}
        unavailable: list[str] = []
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            # each call runs in a copy of this request's context: the correlation id travels along
            futures = {name: pool.submit(contextvars.copy_context().run, fetch, *spec) for name, spec in calls.items()}
            for name, future in futures.items():
                try:
                    results[name] = future.result()
                except ServiceUnavailable:
                    results[name] = None
                    unavailable.append(name)
        for name in ("my_upcoming_activities", "recommended_activities", "nearby_popups", "offers"):
            if results[name] is not None:
                results[name] = results[name]["items"]
        if results["recommended_activities"] is not None:
            results["recommended_activities"] = [a for a in results["recommended_activities"]
                                                 if not a.get("my_signup")][:5]
        return {"user": _user_out(_me_row()), **results, "unavailable": unavailable}


# ---- activities ----------------------------------------------------------------------------

def _activity(method: str, path: str, **kwargs: Any) -> Any:
    return services().activity.call(method, path, current_user(), **kwargs)


@blp.route("/activities")
class Activities(MethodView):
    @login_required
    @blp.arguments(ActivityQuery, location="query")
    @blp.response(200, page_of(ActivityOut, "ActivityPage"))
    def get(self, args):
        """Find activities (published ones by default) by organisation, skill, time; ``mine`` for my sign-ups."""
        params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in args.items() if v is not None}
        return _activity("GET", "/activities", params=params)

    @login_required
    @idempotent
    @blp.arguments(ActivityIn)
    @blp.response(201, ActivityOut)
    def post(self, data):
        """Create a draft activity (organizer or admin of the organisation)."""
        return _activity("POST", "/activities", json=ActivityIn().dump(data))


@blp.route("/activities/<activity_id>")
class ActivityItem(MethodView):
    @login_required
    @blp.response(200, ActivityOut)
    def get(self, activity_id):
        return _activity("GET", f"/activities/{activity_id}")


@blp.route("/activities/<activity_id>/publish")
class Publish(MethodView):
    @login_required
    @idempotent
    @blp.response(200, ActivityOut)
    def post(self, activity_id):
        return _activity("POST", f"/activities/{activity_id}/publish")


@blp.route("/activities/<activity_id>/cancel")
class Cancel(MethodView):
    @login_required
    @idempotent
    @blp.arguments(CancelIn)
    @blp.response(200, ActivityOut)
    def post(self, data, activity_id):
        return _activity("POST", f"/activities/{activity_id}/cancel", json=data)


@blp.route("/activities/<activity_id>/signups")
class Signup(MethodView):
    @login_required
    @idempotent
    @blp.response(201, SignupOut)
    def post(self, activity_id):
        """Sign up for an activity (一键报名)."""
        return _activity("POST", f"/activities/{activity_id}/signups")


@blp.route("/activities/<activity_id>/signups/me")
class MySignup(MethodView):
    @login_required
    @idempotent
    @blp.response(200, SignupOut)
    def delete(self, activity_id):
        return _activity("DELETE", f"/activities/{activity_id}/signups/me")


@blp.route("/activities/<activity_id>/complete")
class Complete(MethodView):
    @login_required
    @idempotent
    @blp.arguments(CompleteIn)
    @blp.response(200, CompletionOut)
    def post(self, data, activity_id):
        """Confirm completion: each participant's points are issued through ``activity.completed``."""
        return _activity("POST", f"/activities/{activity_id}/complete", json=data)


# ---- points --------------------------------------------------------------------------------

@blp.route("/points/balance")
class Balance(MethodView):
    @login_required
    @blp.response(200, BalanceOut)
    def get(self):
        return services().points.call("GET", "/accounts/me/balance", current_user())


@blp.route("/points/transactions")
class Transactions(MethodView):
    @login_required
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_of(TransactionOut, "TransactionPage"))
    def get(self, args):
        """My points history, newest first; each line names its cause (activity, award, redemption, donation)."""
        return services().points.call("GET", "/accounts/me/transactions", current_user(), params=args)


# ---- alliance ------------------------------------------------------------------------------

@blp.route("/merchants")
class Merchants(MethodView):
    @login_required
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_of(MerchantOut, "MerchantPage"))
    def get(self, args):
        return services().merchant.call("GET", "/merchants", current_user(), params=args)


@blp.route("/merchants/<merchant_id>")
class MerchantItem(MethodView):
    @login_required
    @blp.response(200, MerchantOut)
    def get(self, merchant_id):
        return services().merchant.call("GET", f"/merchants/{merchant_id}", current_user())


@blp.route("/offers")
class Offers(MethodView):
    @login_required
    @blp.arguments(OfferQuery, location="query")
    @blp.response(200, page_of(OfferOut, "OfferPage"))
    def get(self, args):
        params = {k: v for k, v in args.items() if v is not None}
        return services().merchant.call("GET", "/offers", current_user(), params=params)


@blp.route("/popups")
class Popups(MethodView):
    @login_required
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_of(PopupOut, "PopupPage"))
    def get(self, args):
        """Roving pop-up redemption points (巡回兑换点) from today on."""
        return services().merchant.call("GET", "/popups", current_user(), params=args)

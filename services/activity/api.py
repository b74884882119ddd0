"""The activity service's HTTP API (called by the gateway with an internal token)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.activity import rules
from services.activity.models import activities, completions, orgs, signups
from shared.auth import current_principal, require_role
from shared.service import kit
from shared.web import ApiError

blp = Blueprint("activity", __name__, description="Organisations, activities, sign-ups, completions")


class OrgOut(Schema):
    code = fields.Str()
    name = fields.Str()
    kind = fields.Str()
    parent_code = fields.Str(allow_none=True)


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
    starts_at = fields.DateTime()
    ends_at = fields.DateTime()
    capacity = fields.Int()
    signed_up = fields.Int()
    points = fields.Int()
    hours = fields.Float()
    status = fields.Str()
    cancel_reason = fields.Str(allow_none=True)
    my_signup = fields.Str(allow_none=True, metadata={"description": "the caller's sign-up status, if any"})


class ActivityQuery(Schema):
    status = fields.Str(load_default=None, validate=validate.OneOf(["draft", "published", "completed", "cancelled"]))
    org_code = fields.Str(load_default=None)
    skill = fields.Str(load_default=None)
    mine = fields.Bool(load_default=False, metadata={"description": "only activities I signed up for"})
    upcoming = fields.Bool(load_default=False)
    page = fields.Int(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Int(load_default=20, validate=validate.Range(min=1, max=100))


class ActivityPage(Schema):
    items = fields.List(fields.Nested(ActivityOut))
    page = fields.Int()
    page_size = fields.Int()
    total = fields.Int()


class CancelIn(Schema):
    reason = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=300))


class CompleteIn(Schema):
    participants = fields.List(fields.Str(), load_default=None, allow_none=True,
                               metadata={"description": "user ids who took part; default: everyone signed up"})


class SignupOut(Schema):
    activity_id = fields.Str()
    user_id = fields.Str()
    status = fields.Str()


class CompletionOut(Schema):
    activity_id = fields.Str()
    status = fields.Str()
    completed = fields.List(fields.Str())


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parents(session: Session) -> dict[str, str | None]:
    return {row.code: row.parent_code for row in session.execute(select(orgs.c.code, orgs.c.parent_code))}


def _load(session: Session, activity_id: str, *, lock: bool = False):  # noqa: ANN202
    stmt = select(activities).where(activities.c.id == activity_id)
    if lock:
        stmt = stmt.with_for_update()
    row = session.execute(stmt).mappings().first()
    if row is None:
        raise ApiError(404, "activity_not_found", "No such activity.")
    return row


def _check_manage(session: Session, org_code: str) -> None:
    p = current_principal()
    if not rules.can_manage(p.role, p.org_code, org_code, _parents(session)):
        raise ApiError(403, "forbidden_org", "You do not manage this organisation.")


def _rule(fn, *args):  # noqa: ANN001, ANN202
    try:
        return fn(*args)
    except rules.RuleViolation as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


def _out(row, my_signup: str | None = None) -> dict:  # noqa: ANN001
    return {**dict(row), "my_signup": my_signup}


def _published_event(row) -> dict:  # noqa: ANN001
    return {"activity_id": row["id"], "org_code": row["org_code"], "title": row["title"], "location": row["location"],
            "starts_at": row["starts_at"], "ends_at": row["ends_at"], "capacity": row["capacity"],
            "points": row["points"], "skills": row["skills"]}


@blp.route("/orgs")
class OrgList(MethodView):
    @blp.response(200, OrgOut(many=True))
    def get(self):
        with kit().sessions() as session:
            return [dict(r) for r in session.execute(select(orgs).order_by(orgs.c.code)).mappings()]


@blp.route("/orgs/<code>")
class OrgItem(MethodView):
    @blp.response(200, OrgOut)
    def get(self, code):
        with kit().sessions() as session:
            row = session.execute(select(orgs).where(orgs.c.code == code)).mappings().first()
        if row is None:
            raise ApiError(404, "org_not_found", f"No organisation {code!r}.")
        return dict(row)


@blp.route("/activities")
class ActivityList(MethodView):
    @blp.arguments(ActivityQuery, location="query")
    @blp.response(200, ActivityPage)
    def get(self, args):
        principal = current_principal()
        me = principal.user_id
        a = activities.c
        conds = []
        if args["status"]:
            conds.append(a.status == args["status"])
        elif not args["mine"]:
            conds.append(a.status == "published")
        if args["status"] == "draft":  # drafts are only for those who manage the organisation
            with kit().sessions() as session:
                parents = _parents(session)
            managed = [org for org in parents if rules.can_manage(principal.role, principal.org_code, org, parents)]
            conds.append(a.org_code.in_(managed))
        if args["org_code"]:
            conds.append(a.org_code == args["org_code"])
        if args["upcoming"]:
            conds.append(a.ends_at >= _now())
        if args["mine"]:
            conds.append(a.id.in_(select(signups.c.activity_id).where(
                and_(signups.c.user_id == me, signups.c.status != "cancelled"))))
        query = select(activities).where(*conds).order_by(a.starts_at, a.id)
        start = (args["page"] - 1) * args["page_size"]
        with kit().sessions() as session:
            if args["skill"]:
                # Skills are a JSON list; filtering it here stays portable across SQLite and PostgreSQL.
                rows = [r for r in session.execute(query).mappings() if args["skill"] in (r["skills"] or [])]
                total, page = len(rows), rows[start:start + args["page_size"]]
            else:
                total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
                page = session.execute(query.limit(args["page_size"]).offset(start)).mappings().all()
            mine = dict(session.execute(select(signups.c.activity_id, signups.c.status).where(
                and_(signups.c.user_id == me, signups.c.activity_id.in_([r["id"] for r in page])))).all())
        return {"items": [_out(r, mine.get(r["id"])) for r in page], "page": args["page"],
                "page_size": args["page_size"], "total": total}

    @require_role("organizer", "admin")
    @blp.arguments(ActivityIn)
    @blp.response(201, ActivityOut)
    def post(self, data):
        _rule(rules.validate_schedule, data["starts_at"], data["ends_at"], data["capacity"], data["points"])
        with kit().sessions() as session:
            if session.execute(select(orgs.c.code).where(orgs.c.code == data["org_code"])).first() is None:
                raise ApiError(422, "org_not_found", f"No organisation {data['org_code']!r}.")
            _check_manage(session, data["org_code"])
            row = {**data, "id": str(uuid.uuid4()), "status": "draft", "version": 1, "signed_up": 0,
                   "hours": rules.hours_between(data["starts_at"], data["ends_at"]),
                   "created_by": current_principal().user_id, "created_at": _now(), "cancel_reason": None}
            session.execute(activities.insert().values(**row))
            session.commit()
        return _out(row)


@blp.route("/activities/<activity_id>")
class ActivityItem(MethodView):
    @blp.response(200, ActivityOut)
    def get(self, activity_id):
        principal = current_principal()
        me = principal.user_id
        with kit().sessions() as session:
            row = _load(session, activity_id)
            if row["status"] == "draft" and not rules.can_manage(principal.role, principal.org_code,
                                                                   row["org_code"], _parents(session)):
                raise ApiError(404, "activity_not_found", "No such activity.")  # a draft is not public yet
            mine = session.execute(select(signups.c.status).where(
                and_(signups.c.activity_id == activity_id, signups.c.user_id == me))).scalar()
        return _out(row, mine)


def _transition(activity_id: str, action: str, reason: str | None = None) -> dict:
    k = kit()
    with k.sessions() as session:
        row = _load(session, activity_id, lock=True)
        _check_manage(session, row["org_code"])
        target = _rule(rules.next_status, row["status"], action)
        version = row["version"] + 1
        session.execute(update(activities).where(activities.c.id == activity_id).values(
            status=target, version=version, cancel_reason=reason if action == "cancel" else row["cancel_reason"]))
        row = _load(session, activity_id)
        if action == "publish":
            k.emit(session, "activity.published", _published_event(row), subject=activity_id, sequence=version)
        elif action == "cancel" and row["status"] == "cancelled":
            k.emit(session, "activity.cancelled", {"activity_id": activity_id, "org_code": row["org_code"],
                                                   "reason": reason}, subject=activity_id, sequence=version)
        session.commit()
        return row


@blp.route("/activities/<activity_id>/publish")
class Publish(MethodView):
    @require_role("organizer", "admin")
    @blp.response(200, ActivityOut)
    def post(self, activity_id):
        return _out(_transition(activity_id, "publish"))


@blp.route("/activities/<activity_id>/cancel")
class Cancel(MethodView):
    @require_role("organizer", "admin")
    @blp.arguments(CancelIn)
    @blp.response(200, ActivityOut)
    def post(self, data, activity_id):
        return _out(_transition(activity_id, "cancel", data["reason"]))


@blp.route("/activities/<activity_id>/signups")
class Signups(MethodView):
    @blp.response(201, SignupOut)
    def post(self, activity_id):
        me = current_principal().user_id
        with kit().sessions() as session:
            row = _load(session, activity_id)
            if row["status"] != "published":
                raise ApiError(409, "not_open", "This activity is not open for sign-up.")
            existing = session.execute(select(signups).where(
                and_(signups.c.activity_id == activity_id, signups.c.user_id == me))).mappings().first()
            if existing and existing["status"] == "signed_up":
                return {"activity_id": activity_id, "user_id": me, "status": "signed_up"}
            # One conditional UPDATE takes the seat: two last-seat sign-ups cannot both win.
            taken = session.execute(update(activities).where(and_(
                activities.c.id == activity_id, activities.c.status == "published",
                activities.c.signed_up < activities.c.capacity)).values(signed_up=activities.c.signed_up + 1)).rowcount
            if taken != 1:
                raise ApiError(409, "activity_full", "This activity is full.")
            try:
                if existing:
                    session.execute(update(signups).where(signups.c.id == existing["id"]).values(status="signed_up"))
                else:
                    session.execute(signups.insert().values(id=str(uuid.uuid4()), activity_id=activity_id,
                                                            user_id=me, status="signed_up", created_at=_now()))
                session.commit()
            except IntegrityError:  # a concurrent sign-up by the same person won
                session.rollback()
        return {"activity_id": activity_id, "user_id": me, "status": "signed_up"}


@blp.route("/activities/<activity_id>/signups/me")
class MySignup(MethodView):
    @blp.response(200, SignupOut)
    def delete(self, activity_id):
        me = current_principal().user_id
        with kit().sessions() as session:
            row = _load(session, activity_id)
            if row["status"] != "published":
                raise ApiError(409, "not_open", "Sign-ups of this activity can no longer change.")
            changed = session.execute(update(signups).where(and_(
                signups.c.activity_id == activity_id, signups.c.user_id == me,
                signups.c.status == "signed_up")).values(status="cancelled")).rowcount
            if changed != 1:
                raise ApiError(404, "signup_not_found", "You are not signed up for this activity.")
            session.execute(update(activities).where(activities.c.id == activity_id)
                            .values(signed_up=activities.c.signed_up - 1))
            session.commit()
        return {"activity_id": activity_id, "user_id": me, "status": "cancelled"}


@blp.route("/activities/<activity_id>/complete")
class Complete(MethodView):
    @require_role("organizer", "admin")
    @blp.arguments(CompleteIn)
    @blp.response(200, CompletionOut)
    def post(self, data, activity_id):
        k = kit()
        me = current_principal().user_id
        with k.sessions() as session:
            row = _load(session, activity_id, lock=True)
            _check_manage(session, row["org_code"])
            target = _rule(rules.next_status, row["status"], "complete")
            signed = [r.user_id for r in session.execute(select(signups.c.user_id).where(and_(
                signups.c.activity_id == activity_id, signups.c.status == "signed_up")).order_by(signups.c.created_at))]
            chosen = signed if data["participants"] is None else [u for u in signed if u in set(data["participants"])]
            unknown = set(data["participants"] or []) - set(signed)
            if unknown:
                raise ApiError(422, "not_signed_up", "Some participants are not signed up.",
                               {"user_ids": sorted(unknown)})
            version = row["version"] + 1
            session.execute(update(activities).where(activities.c.id == activity_id)
                            .values(status=target, version=version))
            now = _now()
            for user_id in chosen:
                completion_id = str(uuid.uuid4())
                session.execute(completions.insert().values(
                    id=completion_id, activity_id=activity_id, user_id=user_id, points=row["points"],
                    hours=row["hours"], completed_by=me, completed_at=now))
                session.execute(update(signups).where(and_(signups.c.activity_id == activity_id,
                                                           signups.c.user_id == user_id)).values(status="completed"))
                k.emit(session, "activity.completed", {
                    "completion_id": completion_id, "activity_id": activity_id, "org_code": row["org_code"],
                    "user_id": user_id, "points": row["points"], "hours": row["hours"], "completed_at": now,
                }, subject=activity_id, sequence=version)
            session.commit()
        return {"activity_id": activity_id, "status": target, "completed": chosen}



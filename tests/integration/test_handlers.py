"""Every service handler, on its real (migrated) PostgreSQL database, through the inbox:
delivered twice → applied once; arrived out of order → the same outcome."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from services.activity.handlers import build_handlers as activity_handlers
from services.activity.models import metadata as activity_metadata, volunteer_profiles
from services.activity.migrate import main as migrate_activity
from services.points import ledger
from services.points.handlers import build_handlers as points_handlers
from services.points.migrate import main as migrate_points
from services.points.models import metadata as points_metadata, transfers
from shared.config import Settings
from shared.consumer import InboxHandler
from shared.events import decode, new_event
from shared.service import ServiceKit

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc)


def wire(event):
    """What a consumer receives: the event as it crossed the bus."""
    return decode(event.to_json())


def registered(user_id: str, org: str = "haike"):
    return wire(new_event("user.registered", {"user_id": user_id, "display_name": "李", "role": "resident",
                                              "org_code": org, "registered_at": NOW},
                          service="gateway", subject=user_id))


def completed(user_id: str, points: int = 30):
    activity_id = str(uuid.uuid4())
    return wire(new_event("activity.completed", {
        "completion_id": str(uuid.uuid4()), "activity_id": activity_id, "org_code": "haike", "user_id": user_id,
        "points": points, "hours": 3.0, "completed_at": NOW}, service="activity", subject=activity_id))


def awarded(user_id: str, points: int = 50):
    award_id = str(uuid.uuid4())
    return wire(new_event("award.granted", {"award_id": award_id, "org_code": "tianfu", "user_id": user_id,
                                            "category": "最佳问题发现", "points": points},
                          service="activity", subject=award_id))


@pytest.fixture
def points(infra):
    url = infra.database("h_points")
    migrate_points(url)
    kit = ServiceKit(Settings(service="points", database_url=url), points_metadata)
    handlers = {h.name: InboxHandler(kit.sessions, kit.inbox, f"points.{h.name}", h.fn) for h in points_handlers(kit)}
    yield kit, handlers
    kit.dispose()
    infra.drop_database(url)


@pytest.fixture
def activity(infra):
    url = infra.database("h_activity")
    migrate_activity(url)
    kit = ServiceKit(Settings(service="activity", database_url=url), activity_metadata)
    handlers = {h.name: InboxHandler(kit.sessions, kit.inbox, f"activity.{h.name}", h.fn)
                for h in activity_handlers(kit)}
    yield kit, handlers
    kit.dispose()
    infra.drop_database(url)


def balance(kit, user_id: str) -> int:
    with kit.sessions() as session:
        bal = ledger.balance(session, ledger.account_id_for("resident", user_id))
        return bal.posted if bal else 0


def outbox_names(kit) -> list[str]:
    with kit.sessions() as session:
        return [r for (r,) in session.execute(select(kit.outbox.c.routing_key))]


def test_a_completion_delivered_twice_credits_once_and_announces_once(points):
    kit, h = points
    user = str(uuid.uuid4())
    h["open_account"](registered(user))
    event = completed(user, 30)
    assert h["credit_completion"](event) is True
    assert h["credit_completion"](event) is False
    assert balance(kit, user) == 30
    assert outbox_names(kit) == ["points.credited"]


def test_a_completion_before_the_registration_still_credits_and_the_registration_is_harmless(points):
    kit, h = points
    user = str(uuid.uuid4())
    assert h["credit_completion"](completed(user, 30)) is True  # the account is opened on demand
    assert h["open_account"](registered(user)) is True  # arrives late: nothing more to do
    assert h["credit_completion"](completed(user, 12)) is True
    assert balance(kit, user) == 42
    with kit.sessions() as session:
        assert session.execute(select(func.count()).select_from(points_metadata.tables["accounts"])
                               .where(points_metadata.tables["accounts"].c.owner == user)).scalar_one() == 1


def test_an_award_delivered_twice_credits_once_and_links_its_cause(points):
    kit, h = points
    user = str(uuid.uuid4())
    event = awarded(user, 50)
    assert [h["credit_award"](event), h["credit_award"](event)] == [True, False]
    assert balance(kit, user) == 50
    with kit.sessions() as session:
        [(cause_type, cause_id)] = session.execute(select(transfers.c.cause_type, transfers.c.cause_id)).all()
    assert (cause_type, cause_id) == ("award", str(event.data["award_id"]))


def test_the_same_completion_under_a_new_event_id_is_still_credited_once(points):
    # A republished completion (new envelope id, same completion) meets the ledger's idempotency key.
    kit, h = points
    user = str(uuid.uuid4())
    first = completed(user, 30)
    again = wire(new_event("activity.completed", {**first.data}, service="activity", subject=first.subject))
    assert first.id != again.id
    h["credit_completion"](first)
    h["credit_completion"](again)
    assert balance(kit, user) == 30
    assert outbox_names(kit) == ["points.credited"]  # announced once too


def test_a_registration_delivered_twice_opens_one_profile(activity):
    kit, h = activity
    user = str(uuid.uuid4())
    event = registered(user, "xuefu")
    assert [h["open_profile"](event), h["open_profile"](event)] == [True, False]
    with kit.sessions() as session:
        rows = session.execute(select(volunteer_profiles.c.org_code).where(volunteer_profiles.c.user_id == user)).all()
    assert rows == [("xuefu",)]


def test_a_re_sent_registration_under_a_new_event_id_keeps_the_first_profile(activity):
    # Out of order / replayed with a new envelope: the profile row is keyed by user, not by event.
    kit, h = activity
    user = str(uuid.uuid4())
    h["open_profile"](registered(user, "xuefu"))
    h["open_profile"](registered(user, "haike"))
    with kit.sessions() as session:
        assert session.execute(select(func.count()).select_from(volunteer_profiles)
                               .where(volunteer_profiles.c.user_id == user)).scalar_one() == 1

"""Seed the demo street's organisations and activities (idempotent)."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import select

from services.activity import rules
from services.activity.models import activities, orgs
from shared import demo
from shared.service import ServiceKit

CST = timezone(timedelta(hours=8))


def seed(kit: ServiceKit) -> bool:
    """Insert the demo organisations and publish the demo activities; False if already seeded."""
    street = demo.load("street")
    with kit.sessions() as session:
        if session.execute(select(orgs.c.code).where(orgs.c.code == street["street"]["code"])).first():
            return False
        session.execute(orgs.insert().values(code=street["street"]["code"], name=street["street"]["name"],
                                             kind="street", parent_code=None))
        for community in street["communities"]:
            session.execute(orgs.insert().values(code=community["code"], name=community["name"], kind="community",
                                                 parent_code=street["street"]["code"]))
        today = date.today()
        for spec in street["activities"]:
            starts = datetime.combine(today + timedelta(days=spec["day_offset"]), time.fromisoformat(spec["start"]), CST)
            ends = starts + timedelta(hours=spec["hours"])
            activity_id = demo.stable_id("activity", spec["title"])
            row = dict(id=activity_id, org_code=spec["org_code"], title=spec["title"], description=spec["title"],
                       location=spec["location"], skills=spec["skills"], starts_at=starts, ends_at=ends,
                       capacity=spec["capacity"], signed_up=0, points=spec["points"],
                       hours=rules.hours_between(starts, ends), status="published", version=1,
                       created_by="seed", created_at=datetime.now(timezone.utc))
            session.execute(activities.insert().values(**row))
            kit.emit(session, "activity.published", {
                "activity_id": activity_id, "org_code": row["org_code"], "title": row["title"],
                "location": row["location"], "starts_at": starts, "ends_at": ends, "capacity": row["capacity"],
                "points": row["points"], "skills": row["skills"]}, subject=activity_id)
        session.commit()
    return True


def main() -> None:
    """``python -m services.activity.seed``: seed the demo data into ``DATABASE_URL`` (after migrating)."""
    from services.activity.models import metadata
    from shared.service import bootstrap
    seed(bootstrap("activity", metadata))


if __name__ == "__main__":
    main()

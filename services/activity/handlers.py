"""Events the activity service consumes."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.activity.models import volunteer_profiles
from shared.consumer import Handler
from shared.events import Event
from shared.service import ServiceKit


def build_handlers(kit: ServiceKit) -> list[Handler]:
    def open_profile(session: Session, event: Event) -> None:
        data = event.data
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        session.execute(insert(volunteer_profiles).values(
            user_id=str(data["user_id"]), display_name=data["display_name"], org_code=data.get("org_code"),
            skills=list(data.get("skills") or []), created_at=datetime.now(timezone.utc),
        ).on_conflict_do_nothing())

    return [Handler("open_profile", ("user.registered",), open_profile)]

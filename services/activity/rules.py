"""Where activity decisions are made: plain rules, no Flask, no database."""
from __future__ import annotations

from datetime import datetime
from typing import Mapping

TRANSITIONS = {
    "publish": ({"draft"}, "published"),
    "cancel": ({"draft", "published"}, "cancelled"),
    "complete": ({"published"}, "completed"),
}


class RuleViolation(Exception):
    """A request the rules refuse; ``code`` is machine-readable, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def next_status(current: str, action: str) -> str:
    """The status after ``action``, or RuleViolation if the activity is not in a state for it."""
    allowed, target = TRANSITIONS[action]
    if current not in allowed:
        raise RuleViolation("invalid_state", f"Cannot {action} an activity that is {current}.")
    return target


def validate_schedule(starts_at: datetime, ends_at: datetime, capacity: int, points: int) -> None:
    if ends_at <= starts_at:
        raise RuleViolation("invalid_schedule", "An activity must end after it starts.", 422)
    if capacity < 1:
        raise RuleViolation("invalid_capacity", "Capacity must be at least 1.", 422)
    if points < 0:
        raise RuleViolation("invalid_points", "Points cannot be negative.", 422)


def hours_between(starts_at: datetime, ends_at: datetime) -> float:
    return round((ends_at - starts_at).total_seconds() / 3600, 2)


def can_manage(role: str, actor_org: str | None, target_org: str, parents: Mapping[str, str | None]) -> bool:
    """An organizer or admin manages their own organisation and the communities below it."""
    if role == "system":
        return True
    if role not in ("organizer", "admin") or actor_org is None:
        return False
    org: str | None = target_org
    seen: set[str] = set()
    while org is not None and org not in seen:  # `seen` guards against a cycle in bad data
        if org == actor_org:
            return True
        seen.add(org)
        org = parents.get(org)
    return False

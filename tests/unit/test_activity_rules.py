"""Unit tests of where activity decisions are made (``services/activity/rules.py``); no I/O."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.activity.rules import (RuleViolation, can_manage, hours_between, next_status,
                                     validate_schedule)

START = datetime(2024, 6, 1, 9, 0, tzinfo=timezone.utc)

# A street with two communities below it; a second street elsewhere.
PARENTS = {"tianfu": None, "tianfu-01": "tianfu", "tianfu-02": "tianfu", "jinjiang": None,
           "jinjiang-01": "jinjiang"}


# ---- status transitions ------------------------------------------------------------------------

@pytest.mark.parametrize("current, action, expected", [
    ("draft", "publish", "published"),
    ("draft", "cancel", "cancelled"),
    ("published", "cancel", "cancelled"),
    ("published", "complete", "completed"),
])
def test_allowed_transitions(current: str, action: str, expected: str) -> None:
    assert next_status(current, action) == expected


@pytest.mark.parametrize("current, action", [
    ("published", "publish"),
    ("cancelled", "publish"),
    ("completed", "publish"),
    ("draft", "complete"),
    ("cancelled", "complete"),
    ("completed", "complete"),
    ("cancelled", "cancel"),
    ("completed", "cancel"),
])
def test_refused_transitions_are_409_invalid_state(current: str, action: str) -> None:
    with pytest.raises(RuleViolation) as exc_info:
        next_status(current, action)
    assert (exc_info.value.code, exc_info.value.status) == ("invalid_state", 409)
    assert action in exc_info.value.message and current in exc_info.value.message


# ---- schedule ------------------------------------------------------------------------------------

def test_a_sound_schedule_passes() -> None:
    assert validate_schedule(START, START + timedelta(hours=2), capacity=1, points=0) is None


@pytest.mark.parametrize("ends_at, capacity, points, code", [
    (START, 10, 5, "invalid_schedule"),
    (START - timedelta(minutes=1), 10, 5, "invalid_schedule"),
    (START + timedelta(hours=1), 0, 5, "invalid_capacity"),
    (START + timedelta(hours=1), -3, 5, "invalid_capacity"),
    (START + timedelta(hours=1), 10, -1, "invalid_points"),
])
def test_an_unsound_schedule_is_a_422_with_a_code(ends_at: datetime, capacity: int, points: int,
                                                  code: str) -> None:
    with pytest.raises(RuleViolation) as exc_info:
        validate_schedule(START, ends_at, capacity, points)
    assert (exc_info.value.code, exc_info.value.status) == (code, 422)


def test_the_schedule_is_checked_before_capacity_and_points() -> None:
    with pytest.raises(RuleViolation) as exc_info:
        validate_schedule(START, START, capacity=0, points=-1)
    assert exc_info.value.code == "invalid_schedule"


# ---- hours -------------------------------------------------------------------------------------

@pytest.mark.parametrize("duration, hours", [
    (timedelta(hours=2, minutes=30), 2.5),
    (timedelta(minutes=20), 0.33),
    (timedelta(minutes=40), 0.67),
    (timedelta(hours=8), 8.0),
    (timedelta(days=1, hours=1), 25.0),
])
def test_hours_between(duration: timedelta, hours: float) -> None:
    assert hours_between(START, START + duration) == hours


def test_hours_between_ignores_the_time_zone_of_the_ends() -> None:
    china = timezone(timedelta(hours=8))
    assert hours_between(START, (START + timedelta(hours=3)).astimezone(china)) == 3.0


# ---- who manages what --------------------------------------------------------------------------

def test_an_organizer_manages_their_own_community() -> None:
    assert can_manage("organizer", "tianfu-01", "tianfu-01", PARENTS)


@pytest.mark.parametrize("target", ["tianfu", "tianfu-01", "tianfu-02"])
def test_a_street_organizer_manages_the_street_and_its_communities(target: str) -> None:
    assert can_manage("organizer", "tianfu", target, PARENTS)


@pytest.mark.parametrize("target", ["tianfu-02", "tianfu", "jinjiang-01"])
def test_a_community_organizer_manages_neither_siblings_nor_parents(target: str) -> None:
    assert not can_manage("organizer", "tianfu-01", target, PARENTS)


def test_a_street_organizer_does_not_manage_another_street() -> None:
    assert not can_manage("organizer", "tianfu", "jinjiang-01", PARENTS)


def test_an_admin_manages_like_an_organizer() -> None:
    assert can_manage("admin", "tianfu", "tianfu-02", PARENTS)
    assert not can_manage("admin", "jinjiang", "tianfu-02", PARENTS)


@pytest.mark.parametrize("role", ["resident", "merchant_staff"])
def test_other_roles_manage_nothing_even_in_their_own_community(role: str) -> None:
    assert not can_manage(role, "tianfu-01", "tianfu-01", PARENTS)


def test_an_organizer_without_an_organisation_manages_nothing() -> None:
    assert not can_manage("organizer", None, "tianfu-01", PARENTS)


def test_the_system_manages_everything() -> None:
    assert can_manage("system", None, "jinjiang-01", PARENTS)
    assert can_manage("system", None, "unknown-org", {})


def test_an_unknown_organisation_is_managed_only_by_itself() -> None:
    assert can_manage("organizer", "new-01", "new-01", PARENTS)
    assert not can_manage("organizer", "tianfu", "new-01", PARENTS)

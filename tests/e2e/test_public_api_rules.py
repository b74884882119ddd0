"""What the public API refuses, and how: validation, roles, organisations, idempotency, capacity."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from tests.e2e.system import RunningSystem, login, rows

pytestmark = pytest.mark.e2e


def api(system: RunningSystem) -> str:
    return f"{system.gateway}/api/v1"


def new_phone() -> str:
    return "136" + str(uuid.uuid4().int)[:8]


def register(system, community="haike") -> tuple[dict, str]:
    resp = requests.post(f"{api(system)}/auth/register", json={
        "phone": new_phone(), "password": "volunteer-2026", "display_name": "居民", "community": community})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}, resp.json()["user"]["id"]


def draft(system, headers, org="haike", capacity=5) -> requests.Response:
    starts = datetime.now(timezone.utc) + timedelta(days=3)
    return requests.post(f"{api(system)}/activities", headers=headers, json={
        "org_code": org, "title": "社区活动", "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(), "capacity": capacity, "points": 5})


def assert_error(resp: requests.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert body["code"] == code and body["message"] and "correlation_id" in body
    return body


def test_registration_is_validated_field_by_field(system):
    resp = requests.post(f"{api(system)}/auth/register", json={"phone": "12345", "password": "short",
                                                               "display_name": " "})
    body = assert_error(resp, 422, "validation_failed")
    assert set(body["details"]["fields"]) == {"phone", "password", "display_name"}
    assert_error(requests.post(f"{api(system)}/auth/register", json={"phone": new_phone()}), 422, "validation_failed")
    assert_error(requests.post(f"{api(system)}/auth/register", json={
        "phone": new_phone(), "password": "volunteer-2026", "display_name": "x", "community": "atlantis"}),
        422, "unknown_community")
    assert_error(requests.post(f"{api(system)}/auth/register", json={
        "phone": new_phone(), "password": "volunteer-2026", "display_name": "x", "community": "tianfu"}),
        422, "not_a_community")


def test_one_phone_registers_once_and_bad_credentials_are_refused(system):
    phone = new_phone()
    body = {"phone": phone, "password": "volunteer-2026", "display_name": "张"}
    assert requests.post(f"{api(system)}/auth/register", json=body).status_code == 201
    assert_error(requests.post(f"{api(system)}/auth/register", json=body), 409, "phone_taken")
    assert_error(requests.post(f"{api(system)}/auth/login", json={"phone": phone, "password": "wrong-password"}),
                 401, "bad_credentials")
    assert_error(requests.get(f"{api(system)}/me"), 401, "unauthenticated")
    assert_error(requests.get(f"{api(system)}/me", headers={"Authorization": "Bearer forged"}), 401, "token_invalid")


def test_roles_and_organisations_are_checked(system):
    resident, _ = register(system)
    assert_error(draft(system, resident), 403, "forbidden_role")
    haike_organizer = login(system, "organizer")
    assert_error(draft(system, haike_organizer, org="xuefu"), 403, "forbidden_org")  # another community
    assert_error(draft(system, haike_organizer, org="tianfu"), 403, "forbidden_org")  # the street above it
    admin = login(system, "admin")  # the street administrator manages every community of the street
    resp = draft(system, admin, org="xuefu")
    assert resp.status_code == 201, resp.text
    assert_error(requests.post(f"{api(system)}/activities/{resp.json()['id']}/publish", headers=haike_organizer),
                 403, "forbidden_org")
    staff = login(system, "merchant_staff")
    assert_error(draft(system, staff), 403, "forbidden_role")


def test_a_full_activity_refuses_the_next_volunteer_and_a_cancellation_frees_the_seat(system):
    organizer = login(system, "organizer")
    activity_id = draft(system, organizer, capacity=1).json()["id"]
    first, _ = register(system)
    second, _ = register(system)
    assert_error(requests.post(f"{api(system)}/activities/{activity_id}/signups", headers=first), 409, "not_open")
    requests.post(f"{api(system)}/activities/{activity_id}/publish", headers=organizer).raise_for_status()
    assert requests.post(f"{api(system)}/activities/{activity_id}/signups", headers=first).status_code == 201
    assert_error(requests.post(f"{api(system)}/activities/{activity_id}/signups", headers=second), 409, "activity_full")
    assert requests.delete(f"{api(system)}/activities/{activity_id}/signups/me", headers=first).status_code == 200
    assert requests.post(f"{api(system)}/activities/{activity_id}/signups", headers=second).status_code == 201
    mine = requests.get(f"{api(system)}/activities", headers=second, params={"mine": "true"}).json()
    assert [a["id"] for a in mine["items"]] == [activity_id] and mine["items"][0]["my_signup"] == "signed_up"


def test_cancelling_announces_activity_cancelled_and_blocks_completion(system):
    organizer = login(system, "organizer")
    activity_id = draft(system, organizer).json()["id"]
    requests.post(f"{api(system)}/activities/{activity_id}/publish", headers=organizer).raise_for_status()
    resp = requests.post(f"{api(system)}/activities/{activity_id}/cancel", headers=organizer, json={"reason": "暴雨"})
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert_error(requests.post(f"{api(system)}/activities/{activity_id}/complete", headers=organizer, json={}),
                 409, "invalid_state")
    names = [r[0] for r in rows(system.databases["activity"], "select routing_key from outbox where subject=%s "
                                "order by id", activity_id)]
    assert names == ["activity.published", "activity.cancelled"]


def test_an_idempotency_key_replays_the_response_and_refuses_another_body(system):
    organizer = login(system, "organizer")
    key = {**organizer, "Idempotency-Key": str(uuid.uuid4())}
    starts = (datetime.now(timezone.utc) + timedelta(days=4)).isoformat()
    ends = (datetime.now(timezone.utc) + timedelta(days=4, hours=1)).isoformat()
    body = {"org_code": "haike", "title": "重复提交", "starts_at": starts, "ends_at": ends, "capacity": 3, "points": 2}
    first = requests.post(f"{api(system)}/activities", headers=key, json=body)
    again = requests.post(f"{api(system)}/activities", headers=key, json=body)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and again.headers.get("Idempotent-Replayed") == "true"
    assert rows(system.databases["activity"], "select count(*) from activities where title='重复提交'") == [(1,)]
    assert_error(requests.post(f"{api(system)}/activities", headers=key, json={**body, "capacity": 4}),
                 422, "idempotency_key_reused")


def test_lists_are_paginated_and_validate_their_arguments(system):
    resident, _ = register(system)
    page = requests.get(f"{api(system)}/offers", headers=resident, params={"page_size": 2}).json()
    assert len(page["items"]) == 2 and page["total"] >= 9 and page["page"] == 1
    second = requests.get(f"{api(system)}/offers", headers=resident, params={"page_size": 2, "page": 2}).json()
    assert {o["id"] for o in page["items"]}.isdisjoint({o["id"] for o in second["items"]})
    assert_error(requests.get(f"{api(system)}/offers", headers=resident, params={"page_size": 1000}),
                 422, "validation_failed")


def test_a_draft_is_visible_only_to_those_who_manage_its_organisation(system):
    organizer = login(system, "organizer")  # 海科社区
    activity_id = draft(system, organizer).json()["id"]
    resident, _ = register(system)
    assert_error(requests.get(f"{api(system)}/activities/{activity_id}", headers=resident), 404, "activity_not_found")
    drafts = requests.get(f"{api(system)}/activities", headers=resident, params={"status": "draft"}).json()
    assert drafts["total"] == 0
    assert requests.get(f"{api(system)}/activities/{activity_id}", headers=organizer).json()["status"] == "draft"
    admin = login(system, "admin")  # the street above
    mine = requests.get(f"{api(system)}/activities", headers=admin, params={"status": "draft", "page_size": 100}).json()
    assert activity_id in {a["id"] for a in mine["items"]}

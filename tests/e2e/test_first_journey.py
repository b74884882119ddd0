"""The first journey through the gateway over real HTTP, every api and worker its own process:

a resident registers (user.registered opens a points account and a volunteer profile); an
organizer creates and publishes an activity; the resident signs up; the organizer completes
it; activity.completed credits the points; the resident sees them in /points/balance and /home.
"""
from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta, timezone

import pytest
import requests

from tests.e2e.system import RunningSystem, login, rows
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

def test_register_publish_sign_up_complete_and_see_the_points(system: RunningSystem):
    gw = f"{system.gateway}/api/v1"
    # 1. a resident registers in one step
    resp = requests.post(f"{gw}/auth/register", json={
        "phone": "13912340001", "password": "volunteer-2026", "display_name": "王阿姨", "community": "haike",
        "skills": ["教学"]}, headers={"X-Correlation-ID": "journey-1"})
    assert resp.status_code == 201, resp.text
    resident = {"Authorization": f"Bearer {resp.json()['token']}"}
    user_id = resp.json()["user"]["id"]
    # user.registered opened a points account and a volunteer profile
    eventually(lambda: rows(system.databases["points"], "select 1 from accounts where kind='resident' and owner=%s",
                            user_id), message="points account opened")
    eventually(lambda: rows(system.databases["activity"], "select org_code from volunteer_profiles where user_id=%s",
                            user_id) == [("haike",)], message="volunteer profile opened")
    # the correlation id travelled from the HTTP request into the event
    [(payload,)] = rows(system.databases["gateway"], "select payload from outbox where subject=%s", user_id)
    assert json.loads(payload)["correlationid"] == "journey-1"

    # 2. an organizer creates and publishes an activity
    organizer = login(system, "organizer")
    starts = datetime.now(timezone.utc) + timedelta(days=1)
    resp = requests.post(f"{gw}/activities", headers=organizer, json={
        "org_code": "haike", "title": "社区义诊志愿", "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=3)).isoformat(), "capacity": 5, "points": 30, "skills": ["医护"]})
    assert resp.status_code == 201, resp.text
    activity_id = resp.json()["id"]
    assert resp.json()["status"] == "draft"
    resp = requests.post(f"{gw}/activities/{activity_id}/publish", headers=organizer)
    assert resp.status_code == 200 and resp.json()["status"] == "published", resp.text

    # a resident cannot publish or complete; a direct call to a service without the internal token is refused
    assert requests.post(f"{gw}/activities/{activity_id}/complete", headers=resident, json={}).json()["error"]["code"] \
        == "forbidden_role"
    direct = requests.get(f"{system.url('points')}/accounts/me/balance")
    assert direct.status_code == 401 and direct.json()["error"]["code"] == "unauthenticated"

    # 3. the resident signs up (an Idempotency-Key replay does not sign up twice)
    for _ in range(2):
        resp = requests.post(f"{gw}/activities/{activity_id}/signups", headers={**resident, "Idempotency-Key": "s-1"})
        assert resp.status_code == 201, resp.text
    assert requests.get(f"{gw}/activities/{activity_id}", headers=resident).json()["signed_up"] == 1

    # 4. the organizer completes it; activity.completed credits the points
    resp = requests.post(f"{gw}/activities/{activity_id}/complete", headers=organizer, json={})
    assert resp.status_code == 200 and resp.json()["completed"] == [user_id], resp.text
    again = requests.post(f"{gw}/activities/{activity_id}/complete", headers=organizer, json={})
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"

    # 5. the resident sees them in the balance, the history and the home screen
    balance = eventually(lambda: (b := requests.get(f"{gw}/points/balance", headers=resident).json())["posted"] == 30
                         and b, message="30 points credited")
    assert balance["available"] == 30
    history = requests.get(f"{gw}/points/transactions", headers=resident).json()
    assert [(t["amount"], t["cause_type"], t["cause_id"]) for t in history["items"]] == [(30, "activity", activity_id)]
    home = requests.get(f"{gw}/home", headers=resident).json()
    assert home["balance"]["posted"] == 30 and home["unavailable"] == []
    assert home["user"]["id"] == user_id and home["offers"]

    # 6. nothing is stuck: every service's outbox drained, including events no handler consumes
    #    (activity.published, points.credited, ...), which the event-log stream takes
    for service in ("gateway", "activity", "points", "merchant"):
        eventually(lambda s=service: rows(system.databases[s], "select count(*) from outbox where published_at is null")
                   == [(0,)], message=f"{service} outbox drained")
    assert rows(system.databases["points"], "select count(*) from outbox where routing_key='points.credited'") == [(1,)]


def test_points_are_credited_once_even_when_the_points_worker_dies_and_restarts(system: RunningSystem):
    gw = f"{system.gateway}/api/v1"
    organizer = login(system, "organizer")
    residents = []
    for i in range(3):
        resp = requests.post(f"{gw}/auth/register", json={"phone": f"1391234100{i}", "password": "volunteer-2026",
                                                          "display_name": f"居民{i}", "community": "haike"})
        assert resp.status_code == 201, resp.text
        residents.append(({"Authorization": f"Bearer {resp.json()['token']}"}, resp.json()["user"]["id"]))
    starts = datetime.now(timezone.utc) + timedelta(days=2)
    activity_id = requests.post(f"{gw}/activities", headers=organizer, json={
        "org_code": "haike", "title": "植树", "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(), "capacity": 10, "points": 12}).json()["id"]
    requests.post(f"{gw}/activities/{activity_id}/publish", headers=organizer).raise_for_status()
    for headers, _ in residents:
        requests.post(f"{gw}/activities/{activity_id}/signups", headers=headers).raise_for_status()
    system.kill("points-worker", signal.SIGKILL)  # completions pile up in the queue meanwhile
    requests.post(f"{gw}/activities/{activity_id}/complete", headers=organizer, json={}).raise_for_status()
    system.spawn("points", "worker")
    for headers, _ in residents:
        eventually(lambda h=headers: requests.get(f"{gw}/points/balance", headers=h).json()["posted"] == 12,
                   message="12 points each")
    for _, user_id in residents:
        credits = rows(system.databases["points"], "select count(*) from transfers where cause_id=%s and "
                       "credit_account_id in (select id from accounts where owner=%s)", activity_id, user_id)
        assert credits == [(1,)]


def test_the_home_screen_degrades_when_a_service_is_down(system: RunningSystem):
    resident = login(system, "resident")
    system.kill("merchant-api")
    try:
        home = requests.get(f"{system.gateway}/api/v1/home", headers=resident)
        assert home.status_code == 200
        body = home.json()
        assert sorted(body["unavailable"]) == ["nearby_popups", "offers"]
        assert body["nearby_popups"] is None and body["balance"] is not None
        offers = requests.get(f"{system.gateway}/api/v1/offers", headers=resident)
        assert offers.status_code == 503 and offers.json()["error"]["code"] == "service_unavailable"
    finally:
        system.spawn("merchant", "api")
        eventually(lambda: system._ready("merchant"), timeout=60, message="merchant back")


def test_ops_endpoints_on_every_api(system: RunningSystem):
    for service in ("activity", "points", "merchant", "gateway"):
        assert requests.get(f"{system.url(service)}/healthz").json()["status"] == "ok"
        assert requests.get(f"{system.url(service)}/readyz").json()["status"] == "ready"
        assert "guangmang_http_requests_total" in requests.get(f"{system.url(service)}/metrics").text
    requests.post(f"{system.gateway}/api/v1/auth/register", json={
        "phone": "13912348888", "password": "volunteer-2026", "display_name": "指标"}).raise_for_status()
    applied = 'guangmang_events_consumed_total{outcome="applied",queue="points.open_account"}'
    points_worker = eventually(lambda: (text := requests.get(
        f"http://127.0.0.1:{system.metrics_ports['points']}/metrics").text) and applied in text and text,
        message="the points worker counting what it applied")
    assert 'guangmang_outbox_backlog{service="points"}' in points_worker
    gateway_worker = requests.get(f"http://127.0.0.1:{system.metrics_ports['gateway']}/metrics").text
    assert 'guangmang_events_published_total{event="user.registered",service="gateway"}' in gateway_worker
    spec = requests.get(f"{system.gateway}/api/v1/openapi.json").json()
    assert "/api/v1/points/balance" in spec["paths"] and "/api/v1/home" in spec["paths"]


def test_a_worker_stops_cleanly_on_sigterm_and_its_replacement_carries_on(system: RunningSystem):
    assert system.kill("activity-worker", signal.SIGTERM) == 0
    system.spawn("activity", "worker")
    resp = requests.post(f"{system.gateway}/api/v1/auth/register", json={
        "phone": "13912349999", "password": "volunteer-2026", "display_name": "新居民", "community": "xuefu"})
    assert resp.status_code == 201
    user_id = resp.json()["user"]["id"]
    eventually(lambda: rows(system.databases["activity"], "select org_code from volunteer_profiles where user_id=%s",
                            user_id) == [("xuefu",)], message="profile opened by the new worker")

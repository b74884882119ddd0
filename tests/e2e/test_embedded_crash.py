"""The embedded mode (``make run``) loses no committed event and applies none twice across a
``kill -9``: the in-memory broker dies with the process, the outboxes do not."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def free_base_port() -> int:
    for base in range(21000, 60000, 17):
        try:
            socks = [socket.create_server(("127.0.0.1", base + i)) for i in range(4)]
        except OSError:
            continue
        for sock in socks:
            sock.close()
        return base
    raise RuntimeError("no four free ports in a row")


class Embedded:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.base = free_base_port()
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def gw(self) -> str:
        return f"http://127.0.0.1:{self.base}/api/v1"

    def start(self) -> None:
        self.runs += 1
        env = {**os.environ, "GUANGMANG_DATA_DIR": str(self.data_dir), "GUANGMANG_BASE_PORT": str(self.base),
               "PYTHONPATH": str(ROOT)}
        log = open(self.data_dir / f"run{self.runs}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "system.embedded"], cwd=ROOT, env=env,
                                     stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{self.base}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        eventually(up, timeout=90, interval=0.2, message="embedded gateway up")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def sql(self, service: str, query: str, *params) -> list[tuple]:
        with sqlite3.connect(self.data_dir / f"{service}.db", timeout=30) as conn:
            return conn.execute(query, params).fetchall()

    def log(self, run: int) -> str:
        return (self.data_dir / f"run{run}.log").read_text(errors="replace")


@pytest.fixture
def embedded(tmp_path):
    system = Embedded(tmp_path)
    system.start()
    yield system
    system.stop()


def test_kill_9_mid_stream_then_restart_applies_every_effect_exactly_once(embedded):
    gw = embedded.gw
    organizer = requests.post(f"{gw}/auth/login", json={"phone": "13800000002", "password": "guangmang-organizer"})
    organizer = {"Authorization": f"Bearer {organizer.json()['token']}"}
    starts = datetime.now(timezone.utc) + timedelta(days=1)
    activity_id = requests.post(f"{gw}/activities", headers=organizer, json={
        "org_code": "haike", "title": "巡回兑换点志愿", "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=4)).isoformat(), "capacity": 100, "points": 7}).json()["id"]
    requests.post(f"{gw}/activities/{activity_id}/publish", headers=organizer).raise_for_status()
    user_ids = []
    for i in range(40):
        resp = requests.post(f"{gw}/auth/register", json={"phone": f"1370000{i:04d}", "password": "volunteer-2026",
                                                          "display_name": f"志愿者{i}", "community": "xuefu"})
        resp.raise_for_status()
        user_ids.append(resp.json()["user"]["id"])
        requests.post(f"{gw}/activities/{activity_id}/signups",
                      headers={"Authorization": f"Bearer {resp.json()['token']}"}).raise_for_status()
    requests.post(f"{gw}/activities/{activity_id}/complete", headers=organizer, json={}).raise_for_status()
    # Kill as soon as the first credit lands: the rest of the 40 completions are still in flight.
    eventually(lambda: embedded.sql("points", "select count(*) from transfers where cause_id=?", activity_id)[0][0] > 0,
               timeout=30, interval=0.005, message="first credit")
    embedded.kill9()
    credited_before = embedded.sql("points", "select count(*) from transfers where cause_id=?", activity_id)[0][0]

    embedded.start()
    assert "outbox events again after the restart" in embedded.log(2)

    def all_credited() -> bool:
        return embedded.sql("points", "select count(*) from transfers where cause_id=?", activity_id)[0][0] == 40
    eventually(all_credited, timeout=60, interval=0.1, message="all 40 credits")
    # Every replayed event reached its consumers again; the inboxes kept the effects single.
    eventually(lambda: embedded.sql("points", "select count(*) from outbox where published_at is null")[0][0] == 0
               and embedded.sql("activity", "select count(*) from outbox where published_at is null")[0][0] == 0
               and embedded.sql("gateway", "select count(*) from outbox where published_at is null")[0][0] == 0,
               message="outboxes drained")
    per_user = dict(embedded.sql("points", "select a.owner, count(*) from transfers t join accounts a "
                                 "on a.id = t.credit_account_id where t.cause_id=? group by a.owner", activity_id))
    assert per_user == {u: 1 for u in user_ids}, f"credited before the kill: {credited_before}"
    # user.registered reached the activity service too (it may still be catching up)
    eventually(lambda: embedded.sql("activity", "select count(*) from volunteer_profiles where org_code='xuefu'")[0][0]
               == 40, message="40 volunteer profiles")
    assert embedded.sql("activity", "select count(*), count(distinct user_id) from volunteer_profiles")[0] == (44, 44)
    accounts = embedded.sql("points", "select owner, count(*) from accounts where kind='resident' group by owner "
                            "having count(*) > 1")
    assert accounts == []
    resident_login = requests.post(f"{gw}/auth/login", json={"phone": "13700000000", "password": "volunteer-2026"})
    balance = requests.get(f"{gw}/points/balance",
                           headers={"Authorization": f"Bearer {resident_login.json()['token']}"}).json()
    assert balance["posted"] == 7
    print(f"credited before kill -9: {credited_before}/40")

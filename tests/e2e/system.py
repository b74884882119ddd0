"""Every api and worker as its own process, started with the commands docker-compose.yml gives.

The `command` lists and `environment` mappings are read from docker-compose.yml; only what must
differ on one machine is overridden: database URLs (fresh PostgreSQL databases), the broker URL
(the test virtual host), the ports, and the gateway's service URLs.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests
import yaml

from tests.support.infra import Infra
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("activity", "points", "merchant", "gateway")
ACCOUNTS = json.loads((ROOT / "deploy" / "demo" / "accounts.json").read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]


def local_command(command: list[str]) -> list[str]:
    """The compose command with this machine's interpreter and gunicorn."""
    bindir = Path(sys.executable).parent
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    if command[0] == "gunicorn":
        return [str(bindir / "gunicorn"), *command[1:]]
    return command


@dataclass
class RunningSystem:
    infra: Infra
    logs: Path
    databases: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def env(self, service: str, compose: dict) -> dict[str, str]:
        env = {k: str(v) for k, v in compose[f"{service}-api"]["environment"].items()}
        env.update(DATABASE_URL=self.databases[service], RABBITMQ_URL=self.infra.rabbitmq_url,
                   PORT=str(self.ports[service]), GUNICORN_WORKERS="1", GUANGMANG_RETRY_DELAYS="0.5,1")
        if service == "gateway":
            env.update(ACTIVITY_URL=self.url("activity"), POINTS_URL=self.url("points"),
                       MERCHANT_URL=self.url("merchant"))
        return {**os.environ, **env, "PYTHONPATH": str(ROOT)}

    def start(self, seed: bool = True) -> None:
        compose = compose_services()
        for service in SERVICES:
            self.databases[service] = self.infra.database(f"e2e_{service}")
            self.ports[service] = free_port()
        for service in SERVICES:
            env = self.env(service, compose)
            subprocess.run(local_command(compose[f"{service}-migrate"]["command"]), env=env, cwd=ROOT,
                           check=True, capture_output=True, timeout=120)
        if seed:
            for service in ("activity", "merchant", "gateway"):
                subprocess.run([sys.executable, "-m", f"services.{service}.seed"], env=self.env(service, compose),
                               cwd=ROOT, check=True, capture_output=True, timeout=120)
        for service in SERVICES:
            for kind in ("worker", "api"):
                self.spawn(service, kind, compose)
        for service in SERVICES:
            eventually(lambda s=service: self._ready(s), timeout=60, interval=0.2, message=f"{service} /readyz")

    def spawn(self, service: str, kind: str, compose: dict | None = None) -> None:
        compose = compose or compose_services()
        log = open(self.logs / f"{service}-{kind}.log", "ab")
        env = self.env(service, compose)
        if kind == "worker":  # workers serve their own /metrics (outbox backlog, consumed events)
            self.metrics_ports.setdefault(service, free_port())
            env["METRICS_PORT"] = str(self.metrics_ports[service])
        self.procs[f"{service}-{kind}"] = subprocess.Popen(
            local_command(compose[f"{service}-{kind}"]["command"]), env=env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _ready(self, service: str) -> bool:
        try:
            return requests.get(f"{self.url(service)}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        return proc.wait(30)

    def stop(self) -> None:
        for name in list(self.procs):
            try:
                self.kill(name)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for url in self.databases.values():
            self.infra.drop_database(url)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.glob("*.log")))


def login(system: RunningSystem, role: str) -> dict:
    """Authorization headers of a demo account."""
    spec = ACCOUNTS[role]
    resp = requests.post(f"{system.gateway}/api/v1/auth/login", json={"phone": spec["phone"], "password": spec["password"]})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def rows(db_url: str, sql: str, *params) -> list[tuple]:
    """Read a service's database directly (to see an asynchronous effect land)."""
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return conn.execute(sql, params).fetchall()

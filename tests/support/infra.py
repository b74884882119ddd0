"""Finding real RabbitMQ and PostgreSQL for integration and e2e tests.

In order: ``RABBITMQ_URL`` / ``DATABASE_URL``; else testcontainers where a Docker daemon answers;
else the local default ports; else the tests skip and say why. ``GUANGMANG_REQUIRE_SERVICES=1``
(CI) turns that skip into a failure.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

LOCAL_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass
class Infra:
    rabbitmq_url: str
    postgres_url: str  # an admin URL; tests create their own databases on this server
    how: str
    local_broker: bool  # rabbitmqctl can restart this broker

    def database(self, prefix: str) -> str:
        """Create a fresh database and return its SQLAlchemy URL."""
        name = f"gm_{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(_libpq(self.postgres_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(self.postgres_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(_libpq(self.postgres_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(_libpq(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _docker_answers() -> bool:
    try:
        import docker
        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no Docker here"
        return False


_containers: list = []


def _from_testcontainers() -> Infra:
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer
    pg = PostgresContainer("postgres:16", driver="psycopg").start()
    rabbit = RabbitMqContainer("rabbitmq:3.13").start()
    _containers.extend([pg, rabbit])
    params = rabbit.get_connection_params()
    url = f"amqp://guest:guest@{params.host}:{params.port}//"
    return Infra(url, pg.get_connection_url(), "testcontainers", local_broker=False)


def discover() -> tuple[Infra | None, str]:
    """Find the infrastructure, or explain why there is none."""
    env_rabbit, env_pg = os.environ.get("RABBITMQ_URL"), os.environ.get("DATABASE_URL")
    if env_rabbit and env_pg:
        return Infra(env_rabbit, env_pg, "environment", local_broker=False), ""
    if _docker_answers():
        try:
            return _from_testcontainers(), ""
        except Exception as exc:  # noqa: BLE001
            reason = f"testcontainers failed: {exc}"
    else:
        reason = "no Docker daemon answers"
    if _port_open("127.0.0.1", 5672) and _postgres_answers(LOCAL_POSTGRES):
        return Infra(LOCAL_RABBITMQ, LOCAL_POSTGRES, "local default ports",
                     local_broker=shutil.which("rabbitmqctl") is not None), ""
    return None, (f"RabbitMQ/PostgreSQL not found: RABBITMQ_URL/DATABASE_URL unset, {reason}, "
                  "and nothing answers on 127.0.0.1:5672 and :5432")


def require_or_skip(infra: Infra | None, reason: str) -> Infra:
    if infra is not None:
        return infra
    if os.environ.get("GUANGMANG_REQUIRE_SERVICES") == "1":
        pytest.fail(f"GUANGMANG_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def isolated_vhost(infra: Infra) -> tuple[Infra, str | None]:
    """On a local broker, a fresh virtual host for this test run (so no stale queue sees our events)."""
    if not infra.local_broker:
        return infra, None
    vhost = f"gm_test_{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True, timeout=60)
    parts = urlsplit(infra.rabbitmq_url)
    url = urlunsplit(parts._replace(path=f"/{vhost}"))
    return Infra(url, infra.postgres_url, infra.how, infra.local_broker), vhost


def delete_vhost(vhost: str) -> None:
    subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


def stop_containers() -> None:
    for container in _containers:
        container.stop()


def restart_broker_app() -> None:
    """Stop and start the local RabbitMQ application (connections drop, durable state stays)."""
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120)

"""Configuration from environment variables, read once by a composition root.

Nothing here is read at import time: ``Settings.from_env()`` is called by ``create_app()`` or a
worker's ``main()``, so tests and the embedded runner can build settings explicitly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

DEV_SECRET = "guangmang-dev-only-secret-change-me"


def _floats(raw: str) -> tuple[float, ...]:
    return tuple(float(part) for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Everything a service process needs to know about its environment."""

    service: str
    database_url: str
    broker_url: str = "memory://"
    internal_secret: str = DEV_SECRET
    jwt_secret: str = DEV_SECRET
    street: str = "tianfu"
    # Delays (seconds) of the bounded retries before a message is dead-lettered.
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0)
    relay_batch_size: int = 200
    relay_idle_seconds: float = 0.05
    prefetch: int = 50
    metrics_port: int | None = None
    service_urls: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings for ``service`` from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        urls = {
            name: env[f"{name.upper()}_URL"]
            for name in ("activity", "points", "merchant")
            if env.get(f"{name.upper()}_URL")
        }
        metrics_port = env.get("METRICS_PORT")
        return cls(
            service=service,
            database_url=env.get("DATABASE_URL", f"sqlite:///var/{service}.db"),
            broker_url=env.get("RABBITMQ_URL", "memory://"),
            internal_secret=env.get("GUANGMANG_INTERNAL_SECRET", DEV_SECRET),
            jwt_secret=env.get("GUANGMANG_JWT_SECRET", DEV_SECRET),
            street=env.get("GUANGMANG_STREET", "tianfu"),
            retry_delays=_floats(env.get("GUANGMANG_RETRY_DELAYS", "1,5,30")),
            relay_batch_size=int(env.get("GUANGMANG_RELAY_BATCH", "200")),
            prefetch=int(env.get("GUANGMANG_PREFETCH", "50")),
            metrics_port=int(metrics_port) if metrics_port else None,
            service_urls=urls,
            log_level=env.get("LOG_LEVEL", "INFO"),
        )

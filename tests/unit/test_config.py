"""Unit tests of settings read from the environment (``shared/config.py``)."""
from __future__ import annotations

import dataclasses

import pytest

from shared.config import DEV_SECRET, Settings


def test_defaults_with_an_empty_environment() -> None:
    s = Settings.from_env("points", {})
    assert s.service == "points"
    assert s.database_url == "sqlite:///var/points.db"
    assert s.broker_url == "memory://"
    assert s.internal_secret == DEV_SECRET and s.jwt_secret == DEV_SECRET
    assert s.street == "tianfu"
    assert s.retry_delays == (1.0, 5.0, 30.0)
    assert s.relay_batch_size == 200
    assert s.prefetch == 50
    assert s.metrics_port is None
    assert dict(s.service_urls) == {}
    assert s.log_level == "INFO"


def test_the_default_database_is_named_after_the_service() -> None:
    assert Settings.from_env("merchant", {}).database_url == "sqlite:///var/merchant.db"


def test_every_variable_overrides_its_default() -> None:
    s = Settings.from_env("gateway", {
        "DATABASE_URL": "postgresql+psycopg://g:pw@db:5432/gateway",
        "RABBITMQ_URL": "amqp://guest:guest@rabbit:5672/guangmang",
        "GUANGMANG_INTERNAL_SECRET": "internal-s3cret",
        "GUANGMANG_JWT_SECRET": "jwt-s3cret",
        "GUANGMANG_STREET": "jinjiang",
        "GUANGMANG_RETRY_DELAYS": "0.5,2",
        "GUANGMANG_RELAY_BATCH": "25",
        "GUANGMANG_PREFETCH": "7",
        "METRICS_PORT": "9105",
        "ACTIVITY_URL": "http://activity:8000",
        "POINTS_URL": "http://points:8000",
        "MERCHANT_URL": "http://merchant:8000",
        "LOG_LEVEL": "DEBUG",
    })
    assert s.database_url == "postgresql+psycopg://g:pw@db:5432/gateway"
    assert s.broker_url == "amqp://guest:guest@rabbit:5672/guangmang"
    assert s.internal_secret == "internal-s3cret"
    assert s.jwt_secret == "jwt-s3cret"
    assert s.street == "jinjiang"
    assert s.retry_delays == (0.5, 2.0)
    assert s.relay_batch_size == 25
    assert s.prefetch == 7
    assert s.metrics_port == 9105
    assert dict(s.service_urls) == {"activity": "http://activity:8000", "points": "http://points:8000",
                                    "merchant": "http://merchant:8000"}
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize("raw, expected", [
    ("0.5,2", (0.5, 2.0)),
    (" 0.05 , 0.1 ", (0.05, 0.1)),
    ("3,", (3.0,)),
    ("1", (1.0,)),
])
def test_retry_delays_parse_as_floats(raw: str, expected: tuple[float, ...]) -> None:
    assert Settings.from_env("activity", {"GUANGMANG_RETRY_DELAYS": raw}).retry_delays == expected


def test_only_the_service_urls_that_are_set_are_kept() -> None:
    s = Settings.from_env("gateway", {"ACTIVITY_URL": "http://a:1", "POINTS_URL": "", "GATEWAY_URL": "http://g"})
    assert dict(s.service_urls) == {"activity": "http://a:1"}


def test_an_empty_metrics_port_means_no_metrics_server() -> None:
    assert Settings.from_env("points", {"METRICS_PORT": ""}).metrics_port is None


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///tmp/from-os-environ.db")
    monkeypatch.setenv("GUANGMANG_RETRY_DELAYS", "0.25")
    s = Settings.from_env("points")
    assert s.database_url == "sqlite:///tmp/from-os-environ.db"
    assert s.retry_delays == (0.25,)


def test_an_explicit_mapping_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///tmp/should-not-be-read.db")
    assert Settings.from_env("points", {}).database_url == "sqlite:///var/points.db"


def test_settings_are_frozen() -> None:
    s = Settings.from_env("points", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.broker_url = "amqp://elsewhere"  # type: ignore[misc]

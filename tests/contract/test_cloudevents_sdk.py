"""Contract: the official CloudEvents Python SDK (``cloudevents`` 2.x) parses every message we
publish, and we decode what the SDK serializes.

The bytes under test are ``Event.to_json()`` encoded as UTF-8: exactly the body the outbox relay
publishes, with AMQP content type ``application/cloudevents+json`` (structured mode).
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Callable

import pytest
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import http as legacy_http

from shared.asyncapi import example_data
from shared.context import correlated
from shared.events import CATALOGUE, CONTENT_TYPE, Event, decode, new_event

ENTRIES = sorted(CATALOGUE)
IDS = [f"{n}.v{v}" for n, v in ENTRIES]
EXTENSIONS = ("correlationid", "causationid", "street", "sequence")


def _published(name: str, version: int) -> Event:
    """An event as a service would publish it while handling another event."""
    service, data_cls, _ = CATALOGUE[(name, version)]
    with correlated(str(uuid.uuid4()), str(uuid.uuid4())):
        return new_event(name, example_data(data_cls), service=service, subject=f"agg-{uuid.uuid4()}",
                         street="jinjiang", sequence=7, version=version)


# Each parser returns the SDK's view of the message: (attributes, data).
def _core_rabbitmq(body: bytes) -> tuple[dict[str, Any], Any]:
    # The RabbitMQ binding picks structured mode from the AMQP content type.
    event = rabbitmq.from_rabbitmq_event(rabbitmq.RabbitMQMessage(headers={}, content_type=CONTENT_TYPE, body=body))
    assert isinstance(event, CloudEvent)
    return event.get_attributes(), event.get_data()


def _core_json_format(body: bytes) -> tuple[dict[str, Any], Any]:
    event = JSONFormat().read(CloudEvent, body)
    return event.get_attributes(), event.get_data()


def _legacy_from_json(body: bytes) -> tuple[dict[str, Any], Any]:
    # The 1.x-compatible API (cloudevents.v1.http), still what many consumers use.
    event = legacy_http.from_json(body)
    attributes = event.get_attributes()
    return {**attributes, "time": datetime.fromisoformat(attributes["time"])}, event.data


PARSERS: dict[str, Callable[[bytes], tuple[dict[str, Any], Any]]] = {
    "core-rabbitmq": _core_rabbitmq,
    "core-json-format": _core_json_format,
    "v1-http-from-json": _legacy_from_json,
}


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("name, version", ENTRIES, ids=IDS)
def test_sdk_parses_every_published_event(name: str, version: int, parser: str) -> None:
    event = _published(name, version)
    body = event.to_json().encode("utf-8")

    attributes, data = PARSERS[parser](body)

    assert attributes["specversion"] == "1.0"
    assert attributes["id"] == event.id
    assert attributes["source"] == event.source
    assert attributes["type"] == event.type
    assert attributes["subject"] == event.subject
    assert attributes["datacontenttype"] == "application/json"
    assert attributes["time"] == event.time and attributes["time"].utcoffset().total_seconds() == 0
    assert data == json.loads(body)["data"]
    for extension in EXTENSIONS:
        assert attributes[extension] == getattr(event, extension), extension
    assert isinstance(attributes["sequence"], int)


@pytest.mark.parametrize("name, version", ENTRIES, ids=IDS)
def test_we_decode_what_the_sdk_serializes(name: str, version: int) -> None:
    event = _published(name, version)
    sdk_event = CloudEvent(
        attributes={
            "specversion": "1.0", "id": event.id, "source": event.source, "type": event.type,
            "time": event.time, "subject": event.subject, "datacontenttype": "application/json",
            **{extension: getattr(event, extension) for extension in EXTENSIONS},
        },
        data=event.to_dict()["data"],
    )
    message = rabbitmq.to_structured_event(sdk_event)
    assert message.content_type == CONTENT_TYPE

    assert decode(message.body) == event


def test_sdk_and_we_agree_on_the_envelope() -> None:
    """Re-serializing our message with the SDK changes nothing but formatting."""
    event = _published("activity.completed", 1)
    sdk_event = JSONFormat().read(CloudEvent, event.to_json().encode("utf-8"))
    assert json.loads(JSONFormat().write(sdk_event)) == event.to_dict()

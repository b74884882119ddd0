"""Unit tests of the CloudEvents envelope and the event catalogue (``shared/events.py``); no I/O."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from marshmallow import fields, validate

from shared import context
from shared.context import correlated
from shared.events import (CATALOGUE, CONTENT_TYPE, Event, EventError, decode, event_type, new_event,
                           parse_type)

ENTRIES = sorted(CATALOGUE)
IDS = [f"{n}.v{v}" for n, v in ENTRIES]
WHEN = datetime(2024, 5, 1, 8, 30, 15, 123456, tzinfo=timezone.utc)


def completed_data(**changes: Any) -> dict[str, Any]:
    """Valid ``activity.completed`` data, as Python values."""
    data = {
        "completion_id": uuid.uuid4(), "activity_id": uuid.uuid4(), "org_code": "tianfu-01",
        "user_id": uuid.uuid4(), "points": 20, "hours": 2.5, "completed_at": WHEN,
    }
    return {**data, **changes}


def completed(**changes: Any) -> Event:
    return new_event("activity.completed", completed_data(**changes), service="activity", subject="act-1",
                     sequence=4)


def envelope(**changes: Any) -> dict[str, Any]:
    """A valid structured CloudEvent (as JSON-ready dict) with some attributes replaced."""
    return {**completed().to_dict(), **changes}


def _sample(field: Any, key: str) -> Any:
    """A valid value of a catalogue field (only the field types the catalogue uses)."""
    for v in field.validators:
        if isinstance(v, validate.OneOf):
            return v.choices[0]
    if isinstance(field, fields.UUID):
        return uuid.uuid4()
    if isinstance(field, fields.AwareDateTime):
        return WHEN
    if isinstance(field, fields.List):
        return [_sample(field.inner, key)]
    if isinstance(field, fields.Float):
        return 1.5
    if isinstance(field, fields.Integer):
        return 5
    if isinstance(field, fields.Boolean):
        return True
    if isinstance(field, fields.String):
        return f"{key} 光芒"
    raise AssertionError(f"no sample for {type(field).__name__}")


def sample_event(name: str, version: int) -> Event:
    service, data_cls, _ = CATALOGUE[(name, version)]
    data = {key: _sample(field, key) for key, field in data_cls().load_fields.items()}
    return new_event(name, data, service=service, subject=str(uuid.uuid4()), version=version)


# ---- type naming -------------------------------------------------------------------------------

def test_type_naming() -> None:
    assert event_type("activity.completed") == "cn.guangmang.activity.completed.v1"
    assert event_type("activity.completed", 2) == "cn.guangmang.activity.completed.v2"
    assert parse_type("cn.guangmang.activity.completed.v1") == ("activity.completed", 1)
    assert parse_type("cn.guangmang.redemption.requested.v12") == ("redemption.requested", 12)


@pytest.mark.parametrize("name, version", ENTRIES, ids=IDS)
def test_every_catalogue_event_is_named_after_its_routing_key(name: str, version: int) -> None:
    event = sample_event(name, version)
    assert event.type == f"cn.guangmang.{name}.v{version}"
    assert event.routing_key == name
    assert event.source == f"/guangmang/{CATALOGUE[(name, version)][0]}"
    assert parse_type(event.type) == (name, version)


@pytest.mark.parametrize("ce_type", ["com.example.activity.completed.v1", "cn.guangmang.activity.completed",
                                     "cn.guangmang.activity.completed.vx", "cn.guangmang..v1", ""])
def test_parse_type_rejects_foreign_or_malformed_types(ce_type: str) -> None:
    with pytest.raises(EventError):
        parse_type(ce_type)


# ---- envelope ----------------------------------------------------------------------------------

def test_envelope_shape() -> None:
    event = completed()
    raw = json.loads(event.to_json())
    assert raw["specversion"] == "1.0"
    assert uuid.UUID(raw["id"]) and raw["id"] == event.id
    assert raw["source"] == "/guangmang/activity"
    assert raw["type"] == "cn.guangmang.activity.completed.v1"
    assert raw["subject"] == "act-1"
    assert raw["datacontenttype"] == "application/json"
    assert raw["time"].endswith("Z")
    assert (raw["street"], raw["sequence"]) == ("tianfu", 4)
    assert raw["data"]["points"] == 20 and raw["data"]["completed_at"].startswith("2024-05-01T08:30:15")
    assert CONTENT_TYPE == "application/cloudevents+json"


def test_time_is_serialized_in_utc() -> None:
    chengdu = timezone(timedelta(hours=8))
    event = Event(name="activity.completed", data=completed_data(), source="/guangmang/activity",
                  subject="a", time=datetime(2024, 5, 1, 16, 0, tzinfo=chengdu))
    assert event.to_dict()["time"] == "2024-05-01T08:00:00Z"


def test_non_ascii_is_kept_verbatim() -> None:
    event = completed(org_code="天府街道")
    assert "天府街道" in event.to_json()
    assert decode(event.to_json().encode("utf-8")).data["org_code"] == "天府街道"


def test_new_events_get_distinct_ids_unless_given() -> None:
    assert completed().id != completed().id
    event = new_event("activity.completed", completed_data(), service="activity", subject="a", event_id="fixed-id")
    assert event.id == "fixed-id"


# ---- round trip --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, version", ENTRIES, ids=IDS)
def test_round_trip(name: str, version: int) -> None:
    event = sample_event(name, version)
    assert decode(event.to_json()) == event
    assert decode(event.to_json().encode("utf-8")) == event
    assert decode(event.to_dict()) == event


def test_round_trip_fills_optional_fields_with_their_defaults() -> None:
    user = {"user_id": uuid.uuid4(), "display_name": "李华", "role": "resident", "registered_at": WHEN}
    event = new_event("user.registered", user, service="gateway", subject=user["user_id"])
    assert "org_code" not in event.to_dict()["data"]
    decoded = decode(event.to_json())
    assert decoded.data == {**user, "org_code": None, "merchant_id": None, "skills": []}
    assert decoded.subject == str(user["user_id"])


# ---- additive changes --------------------------------------------------------------------------

def test_unknown_data_fields_are_ignored() -> None:
    raw = envelope()
    raw["data"] = {**raw["data"], "badge": "gold", "bonus": {"x": 1}}
    event = decode(json.dumps(raw))
    assert "badge" not in event.data and "bonus" not in event.data
    assert event.data["points"] == 20


def test_unknown_envelope_attributes_are_ignored() -> None:
    event = decode(json.dumps(envelope(traceparent="00-abc-def-01", dataschema="urn:x")))
    assert event.name == "activity.completed"


def test_new_event_drops_unknown_data_fields_from_the_wire() -> None:
    event = completed(extra="not in the schema")
    assert "extra" not in event.to_dict()["data"]


def test_extensions_default_when_absent() -> None:
    raw = envelope()
    for key in ("street", "sequence", "correlationid", "causationid"):
        raw.pop(key, None)
    event = decode(json.dumps(raw))
    assert (event.street, event.sequence, event.correlationid, event.causationid) == ("tianfu", 1, None, None)


# ---- rejected messages ----------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"", "not json", "[]", '"text"', "42", "null"])
def test_bad_json_is_an_event_error(body: bytes | str) -> None:
    with pytest.raises(EventError):
        decode(body)


@pytest.mark.parametrize("attribute", ["specversion", "id", "source", "type", "subject", "time", "data"])
def test_missing_envelope_attribute_is_an_event_error(attribute: str) -> None:
    raw = envelope()
    del raw[attribute]
    with pytest.raises(EventError, match=attribute):
        decode(json.dumps(raw))


@pytest.mark.parametrize("field", ["completion_id", "activity_id", "org_code", "user_id", "points", "hours",
                                   "completed_at"])
def test_missing_required_data_field_is_an_event_error(field: str) -> None:
    raw = envelope()
    raw["data"] = {k: v for k, v in raw["data"].items() if k != field}
    with pytest.raises(EventError, match=field):
        decode(json.dumps(raw))


@pytest.mark.parametrize("changes", [
    {"points": -1}, {"user_id": "nope"}, {"completed_at": "2024-05-01T08:00:00"}, {"hours": "long"},
], ids=["out-of-range", "bad-uuid", "naive-datetime", "not-a-number"])
def test_invalid_data_is_an_event_error(changes: dict[str, Any]) -> None:
    raw = envelope()
    raw["data"] = {**raw["data"], **changes}
    with pytest.raises(EventError):
        decode(json.dumps(raw))


@pytest.mark.parametrize("data", [None, [], "x"])
def test_data_that_is_not_an_object_is_an_event_error(data: Any) -> None:
    with pytest.raises(EventError):
        decode(json.dumps(envelope(data=data)))


@pytest.mark.parametrize("ce_type", ["cn.guangmang.activity.exploded.v1", "cn.guangmang.activity.completed.v9",
                                     "com.example.activity.completed.v1", "cn.guangmang.activity.completed"])
def test_unknown_type_is_an_event_error(ce_type: str) -> None:
    with pytest.raises(EventError):
        decode(json.dumps(envelope(type=ce_type)))


@pytest.mark.parametrize("changes", [{"specversion": "0.3"}, {"time": "yesterday"}], ids=["specversion", "time"])
def test_bad_envelope_values_are_event_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(EventError):
        decode(json.dumps(envelope(**changes)))


@pytest.mark.parametrize("name, data", [
    ("activity.completed", completed_data(points=-5)),
    ("activity.completed", {k: v for k, v in completed_data().items() if k != "user_id"}),
    ("activity.completed", completed_data(user_id="not-a-uuid")),
    ("activity.completed", completed_data(completed_at=datetime(2024, 5, 1, 8, 0))),  # naive
    ("user.registered", {"user_id": uuid.uuid4(), "display_name": "x", "role": "emperor", "registered_at": WHEN}),
    ("activity.nope", {}),
], ids=["range", "missing", "uuid", "naive-datetime", "one-of", "unknown-event"])
def test_new_event_rejects_invalid_data(name: str, data: dict[str, Any]) -> None:
    with pytest.raises(EventError):
        new_event(name, data, service="activity", subject="a")


# A malformed envelope must be an EventError, so the consumer parks it instead of crash-looping.
@pytest.mark.parametrize("changes", [{"sequence": "x"}, {"sequence": None}, {"type": 5}],
                         ids=["sequence-text", "sequence-null", "type-not-string"])
def test_malformed_extension_or_type_is_an_event_error(changes: dict[str, Any]) -> None:
    with pytest.raises(EventError):
        decode(json.dumps(envelope(**changes)))


def test_time_without_offset_is_an_event_error() -> None:
    with pytest.raises(EventError):
        decode(json.dumps(envelope(time="2024-05-01T08:00:00")))


def test_new_event_non_numeric_int_is_an_event_error() -> None:
    with pytest.raises(EventError):
        completed(points="many")


# ---- correlation ----------------------------------------------------------------------------------

def test_correlation_and_causation_come_from_the_context() -> None:
    with correlated("corr-1", "cause-1"):
        event = completed()
    assert (event.correlationid, event.causationid) == ("corr-1", "cause-1")
    raw = event.to_dict()
    assert (raw["correlationid"], raw["causationid"]) == ("corr-1", "cause-1")
    assert decode(event.to_json()) == event


def test_a_request_has_a_correlation_id_but_no_causation() -> None:
    with correlated("req-9"):
        first, second = completed(), completed()
    assert first.correlationid == second.correlationid == "req-9"
    assert first.causationid is None and "causationid" not in first.to_dict()


def test_a_fresh_correlation_id_when_the_context_has_none() -> None:
    with correlated(None):
        first, second = completed(), completed()
    assert first.correlationid and first.correlationid == second.correlationid
    assert uuid.UUID(first.correlationid)


def test_outside_any_context_each_event_starts_its_own_flow() -> None:
    first, second = completed(), completed()
    assert first.correlationid and second.correlationid and first.correlationid != second.correlationid
    assert first.causationid is None


def test_handling_a_decoded_event_chains_causation() -> None:
    with correlated("corr-7"):
        upstream = completed()
    received = decode(upstream.to_json())
    with correlated(received.correlationid, received.id):  # what the consumer does
        downstream = completed()
    assert downstream.correlationid == "corr-7"
    assert downstream.causationid == upstream.id


def test_context_is_restored_after_the_block() -> None:
    with correlated("outer", "outer-cause"):
        with correlated("inner", "inner-cause"):
            assert context.correlation_id.get() == "inner"
        assert (context.correlation_id.get(), context.causation_id.get()) == ("outer", "outer-cause")
    assert context.correlation_id.get() is None and context.causation_id.get() is None

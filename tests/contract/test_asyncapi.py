"""Contract: ``docs/asyncapi.json`` is current, is valid AsyncAPI 3.0.0 (checked against the
official JSON Schema vendored in ``tests/contract/asyncapi/``), covers the whole catalogue, and
its message payloads accept exactly what we publish."""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from jsonschema import Draft7Validator, FormatChecker
from marshmallow import Schema, fields, validate

from shared import asyncapi
from shared.bus import EXCHANGE_NAME
from shared.context import correlated
from shared.events import CATALOGUE, CONTENT_TYPE, event_type, new_event

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "asyncapi.json"
SCHEMA_PATH = Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0.schema.json"
ENTRIES = sorted(CATALOGUE)

# jsonschema checks "date-time" only with the optional rfc3339-validator installed; register a
# strict RFC 3339 check of our own so that format checking covers every format we use.
FORMATS = FormatChecker()
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    return bool(_RFC3339.match(instance)) and datetime.fromisoformat(instance) is not None


assert {"uuid", "date-time"} <= set(FORMATS.checkers)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def asyncapi_validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _payload_validator(document: dict[str, Any], name: str, version: int) -> Draft7Validator:
    payload = document["components"]["messages"][asyncapi.message_id(name, version)]["payload"]
    return Draft7Validator(payload, format_checker=FORMATS)


def _errors(validator: Draft7Validator, instance: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in sorted(validator.iter_errors(instance), key=str)]


# ---- the committed document --------------------------------------------------------------------

def test_committed_document_is_current() -> None:
    assert DOC_PATH.exists(), "docs/asyncapi.json missing: run python -m shared.asyncapi"
    assert DOC_PATH.read_text(encoding="utf-8") == asyncapi.render(), \
        "docs/asyncapi.json is stale: run python -m shared.asyncapi"


def test_generation_is_deterministic() -> None:
    assert asyncapi.render() == asyncapi.render(asyncapi.build_document())


def test_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "docs" / "asyncapi.json"
    assert asyncapi.main(["--check", "--output", str(out)]) == 1  # missing
    assert asyncapi.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == asyncapi.render()
    assert asyncapi.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("guangmang.events", "other"), encoding="utf-8")
    assert asyncapi.main(["--check", "--output", str(out)]) == 1
    assert "stale" in capsys.readouterr().err


def test_document_is_valid_asyncapi_3(document: dict[str, Any], asyncapi_validator: Draft7Validator) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert _errors(asyncapi_validator, document) == []


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("info"),
    lambda d: next(iter(d["operations"].values())).update(action="publish"),  # AsyncAPI 2 wording
    lambda d: next(iter(d["channels"].values()))["bindings"]["amqp"]["exchange"].update(type="nope"),
    lambda d: next(iter(d["components"]["messages"].values())).update(payload={"type": 5}),
], ids=["no-info", "bad-action", "bad-amqp-binding", "bad-payload-schema"])
def test_official_schema_is_not_vacuous(document: dict[str, Any], asyncapi_validator: Draft7Validator,
                                        mutate: Any) -> None:
    broken = json.loads(json.dumps(document))
    mutate(broken)
    assert _errors(asyncapi_validator, broken)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = set(_refs(document))
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]


def test_info_and_server(document: dict[str, Any]) -> None:
    info = document["info"]
    assert (info["title"], info["version"]) == ("Guangmang events", "1.0.0")
    for phrase in ("at-least-once", "dedupe key", "<service>.<handler>", "<queue>.dlq", CONTENT_TYPE):
        assert phrase in info["description"]
    assert document["servers"]["rabbitmq"]["host"] == "rabbitmq:5672"
    assert document["servers"]["rabbitmq"]["protocol"] == "amqp"


# ---- coverage of the catalogue -----------------------------------------------------------------

def test_document_covers_exactly_the_catalogue(document: dict[str, Any]) -> None:
    assert set(document["channels"]) == {name for name, _ in CATALOGUE}
    assert set(document["components"]["messages"]) == {asyncapi.message_id(n, v) for n, v in CATALOGUE}
    assert set(document["operations"]) == {asyncapi.operation_id(n, s) for (n, _), (s, _, _) in CATALOGUE.items()}


@pytest.mark.parametrize("name, version", ENTRIES, ids=[f"{n}.v{v}" for n, v in ENTRIES])
def test_catalogue_entry_has_channel_message_and_send_operation(document: dict[str, Any], name: str,
                                                                 version: int) -> None:
    service = CATALOGUE[(name, version)][0]
    msg_id = asyncapi.message_id(name, version)

    channel = document["channels"][name]
    assert channel["address"] == name  # the routing key
    assert channel["bindings"]["amqp"]["is"] == "routingKey"
    assert channel["bindings"]["amqp"]["exchange"] == {
        "name": EXCHANGE_NAME, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"}
    assert channel["messages"][msg_id] == {"$ref": f"#/components/messages/{msg_id}"}

    message = document["components"]["messages"][msg_id]
    assert message["contentType"] == CONTENT_TYPE
    assert message["x-guangmang-service"] == service
    assert message["payload"]["properties"]["type"]["const"] == event_type(name, version)
    assert message["payload"]["properties"]["source"]["const"] == f"/guangmang/{service}"

    operation = document["operations"][asyncapi.operation_id(name, service)]
    assert operation["action"] == "send"
    assert operation["channel"] == {"$ref": f"#/channels/{name}"}
    assert {"$ref": f"#/channels/{name}/messages/{msg_id}"} in operation["messages"]
    assert operation["x-guangmang-service"] == service
    assert {"name": f"service:{service}"} in operation["tags"]


# ---- payload schemas against real events -------------------------------------------------------

SAMPLES = [(n, v, sparse) for n, v in ENTRIES for sparse in (False, True)]


@pytest.mark.parametrize("name, version, sparse", SAMPLES,
                         ids=[f"{n}.v{v}-{'sparse' if s else 'full'}" for n, v, s in SAMPLES])
def test_published_event_validates_against_its_message_payload(document: dict[str, Any], name: str,
                                                               version: int, sparse: bool) -> None:
    service, data_cls, _ = CATALOGUE[(name, version)]
    data = asyncapi.example_data(data_cls, sparse=sparse)
    # a full sample is caused by another event; a sparse one starts a flow (no causation id)
    with correlated(str(uuid.uuid4()), None if sparse else str(uuid.uuid4())):
        event = new_event(name, data, service=service, subject=str(uuid.uuid4()), sequence=3, version=version)
    envelope = json.loads(event.to_json())  # exactly what goes on the wire

    validator = _payload_validator(document, name, version)
    assert _errors(validator, envelope) == []
    # and nothing we publish is undocumented
    properties = validator.schema["properties"]
    assert set(envelope) <= set(properties)
    assert set(envelope["data"]) <= set(properties["data"]["properties"])


@pytest.mark.parametrize("name, version", ENTRIES, ids=[f"{n}.v{v}" for n, v in ENTRIES])
def test_message_examples_validate(document: dict[str, Any], name: str, version: int) -> None:
    message = document["components"]["messages"][asyncapi.message_id(name, version)]
    validator = _payload_validator(document, name, version)
    for example in message["examples"]:
        assert _errors(validator, example["payload"]) == []


@pytest.mark.parametrize("mutate", [
    lambda e: e.pop("id"),
    lambda e: e.update(id="not-a-uuid"),
    lambda e: e.update(time="yesterday"),
    lambda e: e.update(time="2024-05-01T08:00:00"),  # no UTC offset
    lambda e: e.update(type="cn.guangmang.activity.completed.v2"),
    lambda e: e.update(source="/guangmang/points"),
    lambda e: e.update(sequence="3"),
    lambda e: e["data"].pop("user_id"),
    lambda e: e["data"].update(points=-1),
    lambda e: e["data"].update(hours="two"),
    lambda e: e["data"].update(completed_at="2024-13-01T00:00:00Z"),
], ids=["no-id", "bad-id", "bad-time", "naive-time", "wrong-type", "wrong-source", "string-sequence",
        "missing-data-field", "points-below-range", "hours-not-number", "bad-data-datetime"])
def test_payload_schema_rejects_invalid_events(document: dict[str, Any], mutate: Any) -> None:
    data = asyncapi.example_data(CATALOGUE[("activity.completed", 1)][1])
    envelope = new_event("activity.completed", data, service="activity", subject="a-1").to_dict()
    mutate(envelope)
    assert _errors(_payload_validator(document, "activity.completed", 1), envelope)


# ---- the marshmallow -> JSON Schema converter --------------------------------------------------

class _Everything(Schema):
    name = fields.Str(required=True, validate=validate.Length(min=1, max=20))
    kind = fields.Str(allow_none=True, validate=validate.OneOf(["a", "b"]))
    count = fields.Int(required=True, validate=validate.Range(min=0, max=5, max_inclusive=False))
    ratio = fields.Float(data_key="ratioPct", metadata={"description": "a ratio"})
    flag = fields.Bool()
    ref = fields.UUID(allow_none=True)
    at = fields.AwareDateTime()
    tags = fields.List(fields.Str(), validate=validate.Length(min=1))
    secret = fields.Str(load_only=True)


def test_converter_maps_fields_and_validators() -> None:
    schema = asyncapi.object_schema(_Everything)
    assert schema["required"] == ["name", "count"]
    props = schema["properties"]
    assert "secret" not in props  # never dumped
    assert props["name"] == {"type": "string", "minLength": 1, "maxLength": 20}
    assert props["kind"] == {"type": ["string", "null"], "enum": ["a", "b", None]}
    assert props["count"] == {"type": "integer", "minimum": 0, "exclusiveMaximum": 5}
    assert props["ratioPct"] == {"type": "number", "description": "a ratio"}
    assert props["flag"] == {"type": "boolean"}
    assert props["ref"] == {"type": ["string", "null"], "format": "uuid"}
    assert props["at"] == {"type": "string", "format": "date-time"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "minItems": 1}


def test_converter_refuses_unknown_field_types() -> None:
    with pytest.raises(TypeError, match="Raw"):
        asyncapi.field_schema(fields.Raw())

"""The AsyncAPI 3.0.0 document of the Guangmang events, generated from :data:`shared.events.CATALOGUE`.

One channel per event name (its address is the routing key on the topic exchange), one message
per (name, version) whose payload is the structured CloudEvents envelope with ``data`` derived
from the marshmallow schema, and one ``send`` operation per event and publishing service.

The generated document is committed as ``docs/asyncapi.json``; a contract test keeps it from
going stale and validates it against the official AsyncAPI 3.0.0 JSON Schema::

    python -m shared.asyncapi           # (re)write docs/asyncapi.json
    python -m shared.asyncapi --check   # exit 1 if the committed file is stale
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from marshmallow import Schema, fields, validate

from shared.bus import EVENT_LOG, EXCHANGE_NAME, dead_letter_queue_name
from shared.events import CATALOGUE, CONTENT_TYPE, SPECVERSION, Event, event_type

ASYNCAPI_VERSION = "3.0.0"
DOC_VERSION = "1.0.0"
SERVER = "rabbitmq"
AMQP_BINDING_VERSION = "0.3.0"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"

# Fixed inputs of the message examples, so that the generated document is reproducible.
_EXAMPLE_NS = uuid.UUID("6f1c2a7e-4b1d-4c55-9d8e-7a0b5c3e9f10")
_EXAMPLE_TIME = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)

_DESCRIPTION = f"""\
Integration events exchanged by the Guangmang (光芒卡) services over RabbitMQ.

**Envelope.** Every message is a [CloudEvents 1.0](https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md)
event in structured JSON mode (content type `{CONTENT_TYPE}`): `specversion`, `id` (a UUID),
`source` (`/guangmang/<service>`), `type` (`cn.guangmang.<name>.v<version>`), `time` (UTC),
`subject` (the aggregate id), `datacontenttype` (`application/json`) and `data`, plus the
extensions `correlationid`, `causationid`, `street` (tenant code) and `sequence` (per-aggregate
version).

**Routing.** Events are published to the durable topic exchange `{EXCHANGE_NAME}` with the bare
event name as routing key (`activity.completed`), persistent, with publisher confirms and mandatory
routing, from each service's transactional outbox (never inside a request).

**Delivery guarantees.** Delivery is at-least-once and unordered: consumers are idempotent, using
the event `id` as the dedupe key (recorded per handler in the inbox, in the same transaction as the
effect), and use `sequence` to tolerate out-of-order arrival. Each consuming handler has its own
durable queue `<service>.<handler>`; a failing message is retried a bounded number of times with a
delay (`<queue>.retry.<ms>`) and then parked in `{dead_letter_queue_name('<queue>')}`. An undecodable
message is parked at once.

**Event log.** Every event is also routed (`#`) to the durable stream `{EVENT_LOG}`, kept 30 days.
External consumers such as the city-level platform read it with the consumer argument
`x-stream-offset` (`first`, a timestamp, or the offset after the last one they processed) and so
catch up after downtime without a queue of their own.

**Versioning.** Changes within a version are additive only and consumers ignore fields they do not
know; a breaking change is a new version, i.e. a new message on the same channel.
"""

_ENVELOPE_DESCRIPTIONS = {
    "specversion": "CloudEvents specification version.",
    "id": "Unique event id; the consumers' dedupe key.",
    "source": "The publishing service.",
    "type": "Event name and version.",
    "time": "When the event occurred (RFC 3339, UTC).",
    "subject": "Id of the aggregate the event is about.",
    "datacontenttype": "Media type of `data`.",
    "correlationid": "Extension: id of the request or flow the event belongs to.",
    "causationid": "Extension: id of the event whose handling produced this one (absent for a request).",
    "street": "Extension: tenant (street) code.",
    "sequence": "Extension: version of the aggregate after the change (per `subject`).",
}


# ---- marshmallow -> JSON Schema --------------------------------------------------------------

def _scalar_schema(field: fields.Field) -> dict[str, Any]:
    """The JSON Schema of a field's value, before nullability and validators."""
    # Order matters where marshmallow classes subclass each other (Email/Url < String, ...).
    if isinstance(field, fields.UUID):
        return {"type": "string", "format": "uuid"}
    if isinstance(field, fields.Email):
        return {"type": "string", "format": "email"}
    if isinstance(field, fields.Url):
        return {"type": "string", "format": "uri"}
    if isinstance(field, fields.String):
        return {"type": "string"}
    if isinstance(field, fields.Boolean):
        return {"type": "boolean"}
    if isinstance(field, fields.Integer):
        return {"type": "integer"}
    if isinstance(field, fields.Float):
        return {"type": "number"}
    if isinstance(field, fields.DateTime):  # AwareDateTime, NaiveDateTime
        return {"type": "string", "format": "date-time"}
    if isinstance(field, fields.Date):
        return {"type": "string", "format": "date"}
    if isinstance(field, fields.List):
        return {"type": "array", "items": field_schema(field.inner)}
    if isinstance(field, fields.Nested):
        nested = field.schema
        return object_schema(type(nested) if isinstance(nested, Schema) else nested)
    raise TypeError(f"no JSON Schema mapping for marshmallow field {type(field).__name__}; "
                    "extend shared.asyncapi._scalar_schema")


def _apply_validators(schema: dict[str, Any], field: fields.Field) -> None:
    """Translate the validators we know into JSON Schema keywords (others are left out,
    which only makes the document more lenient than the code)."""
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            if validator.min is not None:
                schema["minimum" if validator.min_inclusive else "exclusiveMinimum"] = validator.min
            if validator.max is not None:
                schema["maximum" if validator.max_inclusive else "exclusiveMaximum"] = validator.max
        elif isinstance(validator, validate.OneOf):
            schema["enum"] = list(validator.choices)
        elif isinstance(validator, validate.Length):
            prefix = "Items" if schema.get("type") == "array" else "Length"
            low, high = (validator.equal, validator.equal) if validator.equal is not None \
                else (validator.min, validator.max)
            if low is not None:
                schema[f"min{prefix}"] = low
            if high is not None:
                schema[f"max{prefix}"] = high
        elif isinstance(validator, validate.Regexp):
            schema["pattern"] = validator.regex.pattern


def field_schema(field: fields.Field) -> dict[str, Any]:
    """The JSON Schema of one marshmallow field as it appears in serialized (dumped) data.

    Supports String (and UUID, Email, Url), Integer, Float, Boolean, DateTime (incl.
    AwareDateTime), Date, List and Nested; ``allow_none`` adds ``null``; Range, OneOf, Length and
    Regexp validators become the matching keywords. Raises :class:`TypeError` for anything else,
    so that a new field type cannot silently go undocumented.
    """
    schema = _scalar_schema(field)
    _apply_validators(schema, field)
    if field.allow_none:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"].append(None)
    description = field.metadata.get("description")
    if description:
        schema["description"] = description
    return schema


def object_schema(schema_cls: type[Schema]) -> dict[str, Any]:
    """The JSON Schema of what ``schema_cls().dump(...)`` produces.

    Required fields are ``required``; additional properties stay allowed because event data may
    grow additively (consumers ignore unknown fields).
    """
    schema = schema_cls()
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in schema.dump_fields.items():
        key = field.data_key or name
        properties[key] = field_schema(field)
        if field.required:
            required.append(key)
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    return result


def envelope_schema(name: str, version: int) -> dict[str, Any]:
    """The JSON Schema of the structured CloudEvent of one catalogue entry (the message payload)."""
    service, data_cls, description = CATALOGUE[(name, version)]
    data = object_schema(data_cls)
    data["description"] = description
    properties = {
        "specversion": {"type": "string", "const": SPECVERSION},
        "id": {"type": "string", "format": "uuid"},
        "source": {"type": "string", "const": f"/guangmang/{service}"},
        "type": {"type": "string", "const": event_type(name, version)},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string", "minLength": 1},
        "datacontenttype": {"type": "string", "const": "application/json"},
        "data": data,
        "correlationid": {"type": "string", "minLength": 1},
        "causationid": {"type": "string", "minLength": 1},
        "street": {"type": "string", "minLength": 1},
        "sequence": {"type": "integer", "minimum": 1},
    }
    for key, text in _ENVELOPE_DESCRIPTIONS.items():
        properties[key]["description"] = text
    return {
        "title": f"{event_type(name, version)} (CloudEvents 1.0, structured JSON)",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "datacontenttype",
                     "data", "street", "sequence"],
        "properties": properties,
    }


# ---- sample data ---------------------------------------------------------------------------

def _sample_value(field: fields.Field, key: str) -> Any:
    """A valid, deterministic Python value (as the schema loads it) for one field."""
    for validator in field.validators:
        if isinstance(validator, validate.OneOf):
            return next(choice for choice in validator.choices if choice is not None)
    if isinstance(field, fields.UUID):
        return uuid.uuid5(_EXAMPLE_NS, key)
    if isinstance(field, fields.Email):
        return "someone@example.org"
    if isinstance(field, fields.Url):
        return "https://example.org/"
    if isinstance(field, fields.String):
        return f"{key} 示例"
    if isinstance(field, fields.Boolean):
        return True
    if isinstance(field, (fields.Integer, fields.Float)):
        value = 10
        for validator in field.validators:
            if isinstance(validator, validate.Range) and validator.min is not None:
                value = max(value, validator.min + (0 if validator.min_inclusive else 1))
            if isinstance(validator, validate.Range) and validator.max is not None:
                value = min(value, validator.max - (0 if validator.max_inclusive else 1))
        return float(value) if isinstance(field, fields.Float) else value
    if isinstance(field, fields.DateTime):
        return _EXAMPLE_TIME
    if isinstance(field, fields.Date):
        return _EXAMPLE_TIME.date()
    if isinstance(field, fields.List):
        return [_sample_value(field.inner, key)]
    if isinstance(field, fields.Nested):
        nested = field.schema
        return example_data(type(nested) if isinstance(nested, Schema) else nested)
    raise TypeError(f"no sample value for marshmallow field {type(field).__name__}")


def example_data(schema_cls: type[Schema], *, sparse: bool = False) -> dict[str, Any]:
    """Valid sample ``data`` for an event schema, as Python values (UUIDs, aware datetimes).

    With ``sparse``, only the required fields are set and nullable optional fields are None;
    otherwise every field has a value. The values are deterministic.
    """
    data: dict[str, Any] = {}
    for name, field in schema_cls().load_fields.items():
        if field.required or not sparse:
            data[name] = _sample_value(field, name)
        elif field.allow_none:
            data[name] = None
    return data


def _example_event(name: str, version: int) -> dict[str, Any]:
    """A complete, deterministic example message of one catalogue entry."""
    service, data_cls, _ = CATALOGUE[(name, version)]
    key = f"{name}.v{version}"
    return Event(
        name=name, version=version, data=example_data(data_cls), source=f"/guangmang/{service}",
        subject=str(uuid.uuid5(_EXAMPLE_NS, f"{key}/subject")), id=str(uuid.uuid5(_EXAMPLE_NS, key)),
        time=_EXAMPLE_TIME, street="tianfu", sequence=1,
        correlationid=str(uuid.uuid5(_EXAMPLE_NS, f"{key}/correlation")),
        causationid=str(uuid.uuid5(_EXAMPLE_NS, f"{key}/causation")),
    ).to_dict()


# ---- the document --------------------------------------------------------------------------

def message_id(name: str, version: int) -> str:
    """The key of one (name, version) in ``components.messages`` and in its channel."""
    return f"{name}.v{version}"


def _message(name: str, version: int) -> dict[str, Any]:
    service, data_cls, description = CATALOGUE[(name, version)]
    ce_type = event_type(name, version)
    return {
        "name": ce_type,
        "title": f"{name} v{version}",
        "summary": description,
        "contentType": CONTENT_TYPE,
        "correlationId": {
            "description": "Correlation id of the request or flow that led to this event.",
            "location": "$message.payload#/correlationid",
        },
        "tags": [{"name": f"service:{service}"}],
        "payload": envelope_schema(name, version),
        "examples": [{"name": "example", "payload": _example_event(name, version)}],
        "bindings": {"amqp": {"contentEncoding": "utf-8", "messageType": ce_type,
                              "bindingVersion": AMQP_BINDING_VERSION}},
        "x-guangmang-service": service,
        "x-guangmang-schema": data_cls.__name__,
    }


def _channel(name: str, versions: list[int]) -> dict[str, Any]:
    descriptions = sorted({CATALOGUE[(name, v)][2] for v in versions})
    return {
        "address": name,
        "title": name,
        "description": (f"Routing key `{name}` on the topic exchange `{EXCHANGE_NAME}`. "
                        + " ".join(descriptions)),
        "servers": [{"$ref": f"#/servers/{SERVER}"}],
        "messages": {message_id(name, v): {"$ref": f"#/components/messages/{message_id(name, v)}"}
                     for v in versions},
        "bindings": {"amqp": {
            "is": "routingKey",
            "exchange": {"name": EXCHANGE_NAME, "type": "topic", "durable": True,
                         "autoDelete": False, "vhost": "/"},
            "bindingVersion": AMQP_BINDING_VERSION,
        }},
    }


def _operation(name: str, service: str, versions: list[int]) -> dict[str, Any]:
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{name}"},
        "title": f"{service} publishes {name}",
        "summary": CATALOGUE[(name, versions[-1])][2],
        "description": (f"Published by the `{service}` service through its transactional outbox relay: "
                        "persistent, mandatory routing, publisher confirms."),
        "messages": [{"$ref": f"#/channels/{name}/messages/{message_id(name, v)}"} for v in versions],
        "tags": [{"name": f"service:{service}"}],
        "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True,
                              "bindingVersion": AMQP_BINDING_VERSION}},
        "x-guangmang-service": service,
    }


def operation_id(name: str, service: str) -> str:
    """The key of the ``send`` operation of one event name by one service."""
    return f"{service}.send.{name}"


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the whole catalogue, as a JSON-ready dict.

    Channels, messages and operations are sorted by name, so the output does not depend on the
    order of the catalogue.
    """
    entries = sorted(CATALOGUE)
    versions: dict[str, list[int]] = {}
    for name, version in entries:
        versions.setdefault(name, []).append(version)
    # (name, service) -> versions that service publishes (normally a single service per name)
    senders: dict[tuple[str, str], list[int]] = {}
    for name, version in entries:
        senders.setdefault((name, CATALOGUE[(name, version)][0]), []).append(version)

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:cn:guangmang:events",
        "info": {
            "title": "Guangmang events",
            "version": DOC_VERSION,
            "description": _DESCRIPTION,
            "tags": [{"name": f"service:{service}"}
                     for service in sorted({service for service, _, _ in CATALOGUE.values()})],
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            SERVER: {
                "host": "rabbitmq:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "title": "RabbitMQ",
                "description": "The RabbitMQ broker (virtual host `/`) shared by every service.",
            },
        },
        "channels": {name: _channel(name, vs) for name, vs in versions.items()},
        "operations": {operation_id(name, service): _operation(name, service, vs)
                       for (name, service), vs in sorted(senders.items())},
        "components": {
            "messages": {message_id(name, version): _message(name, version) for name, version in entries},
        },
    }


def render(document: dict[str, Any] | None = None) -> str:
    """The document as committed: JSON, indent 2, non-ASCII kept, trailing newline."""
    return json.dumps(build_document() if document is None else document,
                      indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``docs/asyncapi.json``, or with ``--check`` exit 1 if it differs from the generated one."""
    parser = argparse.ArgumentParser(prog="python -m shared.asyncapi", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is missing or stale")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is stale; run: python -m shared.asyncapi", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

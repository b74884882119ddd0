"""The CloudEvents 1.0 envelope and the Guangmang event catalogue.

Every integration event is a structured-mode CloudEvent (``application/cloudevents+json``)::

    {"specversion": "1.0", "id": "<uuid>", "source": "/guangmang/<service>",
     "type": "cn.guangmang.<name>.v<version>", "time": "...Z", "subject": "<aggregate id>",
     "datacontenttype": "application/json", "data": {...},
     "correlationid": "...", "causationid": "...", "street": "tianfu", "sequence": 3}

The routing key on the bus is the bare event name (``activity.completed``). Each (name, version)
has one marshmallow schema for its ``data``; changes to a version are additive only, and
consumers ignore fields they do not know.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from shared import context

SPECVERSION = "1.0"
TYPE_PREFIX = "cn.guangmang."
CONTENT_TYPE = "application/cloudevents+json"


class EventError(ValueError):
    """A message that is not a valid Guangmang event (never retried: it is dead-lettered)."""


class EventData(Schema):
    """Base of every event's ``data`` schema: unknown (newer, additive) fields are ignored."""

    class Meta:
        unknown = EXCLUDE


# ---- data schemas, one per event name and version -----------------------------------------

class UserRegisteredV1(EventData):
    user_id = fields.UUID(required=True)
    display_name = fields.Str(required=True)
    role = fields.Str(required=True, validate=validate.OneOf(["resident", "organizer", "merchant_staff", "admin"]))
    org_code = fields.Str(allow_none=True, load_default=None)
    merchant_id = fields.UUID(allow_none=True, load_default=None)
    skills = fields.List(fields.Str(), load_default=list)
    registered_at = fields.AwareDateTime(required=True)


class ActivityPublishedV1(EventData):
    activity_id = fields.UUID(required=True)
    org_code = fields.Str(required=True)
    title = fields.Str(required=True)
    location = fields.Str(allow_none=True, load_default=None)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    capacity = fields.Int(required=True)
    points = fields.Int(required=True)
    skills = fields.List(fields.Str(), load_default=list)


class ActivityCancelledV1(EventData):
    activity_id = fields.UUID(required=True)
    org_code = fields.Str(required=True)
    reason = fields.Str(allow_none=True, load_default=None)


class ActivityCompletedV1(EventData):
    """One per participant: the completion that earns ``points`` for ``user_id``."""

    completion_id = fields.UUID(required=True)
    activity_id = fields.UUID(required=True)
    org_code = fields.Str(required=True)
    user_id = fields.UUID(required=True)
    points = fields.Int(required=True, validate=validate.Range(min=0))
    hours = fields.Float(required=True)
    completed_at = fields.AwareDateTime(required=True)


class AwardGrantedV1(EventData):
    """One per recipient of an award (City Woodpecker and others)."""

    award_id = fields.UUID(required=True)
    org_code = fields.Str(required=True)
    user_id = fields.UUID(required=True)
    category = fields.Str(required=True)
    points = fields.Int(required=True, validate=validate.Range(min=0))
    reason = fields.Str(allow_none=True, load_default=None)


class PointsCreditedV1(EventData):
    transfer_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    amount = fields.Int(required=True, validate=validate.Range(min=1))
    cause_type = fields.Str(required=True)
    cause_id = fields.Str(required=True)
    balance = fields.Int(required=True)


class RedemptionRequestedV1(EventData):
    redemption_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    merchant_id = fields.UUID(required=True)
    offer_id = fields.UUID(allow_none=True, load_default=None)
    points = fields.Int(required=True, validate=validate.Range(min=1))
    hold_expires_at = fields.AwareDateTime(required=True)


class RedemptionApprovedV1(EventData):
    redemption_id = fields.UUID(required=True)
    hold_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    points = fields.Int(required=True)


class RedemptionRejectedV1(EventData):
    redemption_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    reason = fields.Str(required=True)


class PointsReleasedV1(EventData):
    redemption_id = fields.UUID(required=True)
    hold_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    points = fields.Int(required=True)


class PointsSettledV1(EventData):
    redemption_id = fields.UUID(required=True)
    hold_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    merchant_id = fields.UUID(required=True)
    points = fields.Int(required=True)


class DonationReceivedV1(EventData):
    donation_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    amount = fields.Int(required=True, validate=validate.Range(min=1))
    campaign = fields.Str(allow_none=True, load_default=None)


class MerchantJoinedV1(EventData):
    merchant_id = fields.UUID(required=True)
    name = fields.Str(required=True)
    category = fields.Str(required=True)


class OfferPublishedV1(EventData):
    offer_id = fields.UUID(required=True)
    merchant_id = fields.UUID(required=True)
    title = fields.Str(required=True)
    points_price = fields.Int(required=True, validate=validate.Range(min=1))
    stock = fields.Int(required=True, validate=validate.Range(min=0))


class RedemptionFulfilledV1(EventData):
    redemption_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    merchant_id = fields.UUID(required=True)
    points = fields.Int(required=True)


class RedemptionCancelledV1(EventData):
    redemption_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    reason = fields.Str(required=True)


#: (event name, version) -> (publishing service, data schema class, one-line description)
CATALOGUE: dict[tuple[str, int], tuple[str, type[EventData], str]] = {
    ("user.registered", 1): ("gateway", UserRegisteredV1, "A person registered; opens a points account and a volunteer profile."),
    ("activity.published", 1): ("activity", ActivityPublishedV1, "A volunteer activity opened for sign-up."),
    ("activity.cancelled", 1): ("activity", ActivityCancelledV1, "A published activity was cancelled."),
    ("activity.completed", 1): ("activity", ActivityCompletedV1, "One participant completed an activity and earns its points."),
    ("award.granted", 1): ("activity", AwardGrantedV1, "One recipient was granted an award worth points."),
    ("points.credited", 1): ("points", PointsCreditedV1, "Points were credited to a resident's account."),
    ("redemption.approved", 1): ("points", RedemptionApprovedV1, "A hold was placed for a redemption."),
    ("redemption.rejected", 1): ("points", RedemptionRejectedV1, "No hold could be placed (e.g. insufficient points)."),
    ("points.released", 1): ("points", PointsReleasedV1, "A redemption's hold was voided; the points are available again."),
    ("points.settled", 1): ("points", PointsSettledV1, "A redemption's hold was posted to the merchant."),
    ("donation.received", 1): ("points", DonationReceivedV1, "A resident donated points to the charity fund."),
    ("merchant.joined", 1): ("merchant", MerchantJoinedV1, "A merchant was admitted to the Guangmang Alliance."),
    ("offer.published", 1): ("merchant", OfferPublishedV1, "A merchant published an offer (redemption scene)."),
    ("redemption.requested", 1): ("merchant", RedemptionRequestedV1, "A resident asked to redeem points; stock is reserved."),
    ("redemption.fulfilled", 1): ("merchant", RedemptionFulfilledV1, "Merchant staff redeemed the voucher at the counter."),
    ("redemption.cancelled", 1): ("merchant", RedemptionCancelledV1, "A redemption was cancelled or expired; its hold must be voided."),
}


def event_type(name: str, version: int = 1) -> str:
    """The CloudEvents ``type`` for an event name and version."""
    return f"{TYPE_PREFIX}{name}.v{version}"


def parse_type(ce_type: str) -> tuple[str, int]:
    """Split ``cn.guangmang.activity.completed.v1`` into (``activity.completed``, 1)."""
    if not ce_type.startswith(TYPE_PREFIX):
        raise EventError(f"unknown event type {ce_type!r}")
    name, _, version = ce_type[len(TYPE_PREFIX):].rpartition(".v")
    if not name or not version.isdigit():
        raise EventError(f"malformed event type {ce_type!r}")
    return name, int(version)


def _schema(name: str, version: int) -> EventData:
    """The (shared, reusable) schema instance of an event: building one per call is costly."""
    try:
        return _SCHEMAS[(name, version)]
    except KeyError:
        raise EventError(f"event {name}.v{version} is not in the catalogue") from None


_SCHEMAS: dict[tuple[str, int], EventData] = {key: entry[1]() for key, entry in CATALOGUE.items()}


def _utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One integration event: the envelope attributes and its validated ``data``."""

    name: str
    data: dict[str, Any]
    source: str
    subject: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    version: int = 1
    time: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    street: str = "tianfu"
    sequence: int = 1
    correlationid: str | None = None
    causationid: str | None = None
    # ``data`` as serialized by its schema, when already known (saves a second dump on publish)
    wire_data: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def type(self) -> str:
        return event_type(self.name, self.version)

    @property
    def routing_key(self) -> str:
        return self.name

    def to_dict(self) -> dict[str, Any]:
        """The structured CloudEvent as a JSON-ready dict (data serialized by its schema)."""
        envelope: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": _utc(self.time),
            "subject": self.subject,
            "datacontenttype": "application/json",
            "data": self.wire_data if self.wire_data is not None else _schema(self.name, self.version).dump(self.data),
            "street": self.street,
            "sequence": self.sequence,
        }
        if self.correlationid:
            envelope["correlationid"] = self.correlationid
        if self.causationid:
            envelope["causationid"] = self.causationid
        return envelope

    def to_json(self) -> str:
        """The structured CloudEvent as the JSON text published on the bus."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def new_event(name: str, data: dict[str, Any], *, service: str, subject: str, street: str = "tianfu",
              sequence: int = 1, version: int = 1, event_id: str | None = None) -> Event:
    """Build an event from the current context, validating ``data`` against its schema.

    The correlation id of the request or event being handled is carried over, and the event
    being handled (if any) becomes the causation id.
    """
    schema = _schema(name, version)
    try:
        wire = schema.dump(data)
        errors = schema.validate(wire)
    except (ValueError, TypeError, ValidationError) as exc:
        raise EventError(f"{name}.v{version} data invalid: {exc}") from None
    if errors:
        raise EventError(f"{name}.v{version} data invalid: {errors}")
    return Event(
        name=name, version=version, data=data, source=f"/guangmang/{service}", subject=str(subject),
        id=event_id or str(uuid.uuid4()), street=street, sequence=sequence,
        correlationid=context.current_correlation_id(), causationid=context.causation_id.get(),
        wire_data=wire,
    )


_REQUIRED = ("specversion", "id", "source", "type", "subject", "time", "data")


def decode(body: bytes | str | dict[str, Any]) -> Event:
    """Parse and validate a structured CloudEvent received from the bus.

    Raises :class:`EventError` for anything that is not a valid event of the catalogue.
    """
    try:
        raw = body if isinstance(body, dict) else json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise EventError("envelope is not an object")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise EventError(f"envelope lacks {', '.join(missing)}")
    if raw["specversion"] != SPECVERSION:
        raise EventError(f"unsupported specversion {raw['specversion']!r}")
    if not isinstance(raw["type"], str):
        raise EventError("type is not a string")
    name, version = parse_type(raw["type"])
    try:
        data = _schema(name, version).load(raw["data"])
    except ValidationError as exc:
        raise EventError(f"{name}.v{version} data invalid: {exc.messages}") from None
    try:
        when = datetime.fromisoformat(str(raw["time"]).replace("Z", "+00:00"))
        sequence = int(raw.get("sequence", 1))
    except (TypeError, ValueError) as exc:
        raise EventError(f"bad time or sequence: {exc}") from None
    if when.tzinfo is None:
        raise EventError("time has no UTC offset (RFC 3339 requires one)")
    return Event(
        name=name, version=version, data=data, source=raw["source"], subject=str(raw["subject"]),
        id=str(raw["id"]), time=when, street=raw.get("street", "tianfu"),
        sequence=sequence, correlationid=raw.get("correlationid"),
        causationid=raw.get("causationid"),
    )

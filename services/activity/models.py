"""The activity database: organisations, volunteer profiles, activities, sign-ups, completions."""
from __future__ import annotations

from sqlalchemy import (JSON, CheckConstraint, Column, Float, ForeignKey, Index, Integer, String, Table,
                        Text, UniqueConstraint)

from shared.db import UtcDateTime, make_metadata
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = make_metadata()

orgs = Table(
    "orgs", metadata,
    Column("code", String(40), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(20), nullable=False),  # street | community
    Column("parent_code", String(40), ForeignKey("orgs.code"), nullable=True),
)

volunteer_profiles = Table(
    "volunteer_profiles", metadata,
    Column("user_id", String(36), primary_key=True),
    Column("display_name", String(100), nullable=False),
    Column("org_code", String(40), nullable=True),
    Column("skills", JSON, nullable=False, default=list),
    Column("created_at", UtcDateTime, nullable=False),
)

activities = Table(
    "activities", metadata,
    Column("id", String(36), primary_key=True),
    Column("org_code", String(40), ForeignKey("orgs.code"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("location", String(200), nullable=True),
    Column("skills", JSON, nullable=False, default=list),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("signed_up", Integer, nullable=False, default=0),
    Column("points", Integer, nullable=False),
    Column("hours", Float, nullable=False),
    # draft -> published -> completed | cancelled
    Column("status", String(12), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("created_by", String(36), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("cancel_reason", String(300), nullable=True),
    CheckConstraint("signed_up >= 0 AND signed_up <= capacity", name="within_capacity"),
    CheckConstraint("points >= 0", name="points_not_negative"),
)
Index("ix_activities_status_starts_at", activities.c.status, activities.c.starts_at)

signups = Table(
    "signups", metadata,
    Column("id", String(36), primary_key=True),
    Column("activity_id", String(36), ForeignKey("activities.id"), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("status", String(12), nullable=False),  # signed_up | cancelled | completed
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("activity_id", "user_id", name="uq_signups_activity_user"),
)
Index("ix_signups_user_id", signups.c.user_id)

completions = Table(
    "completions", metadata,
    Column("id", String(36), primary_key=True),
    Column("activity_id", String(36), ForeignKey("activities.id"), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("points", Integer, nullable=False),
    Column("hours", Float, nullable=False),
    Column("completed_by", String(36), nullable=False),
    Column("completed_at", UtcDateTime, nullable=False),
    # One completion per participant per activity: points can never be issued twice for it.
    UniqueConstraint("activity_id", "user_id", name="uq_completions_activity_user"),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

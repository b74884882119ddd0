"""Seed one demo account per role from ``deploy/demo/accounts.json`` (idempotent)."""
from __future__ import annotations

from sqlalchemy import select

from services.gateway.api import create_user
from services.gateway.models import users
from shared import demo
from shared.service import ServiceKit


def seed(kit: ServiceKit) -> bool:
    """Register the demo accounts (each emits ``user.registered``); False if already there."""
    accounts = demo.load("accounts")
    created = False
    for role, spec in accounts.items():
        with kit.sessions() as session:
            if session.execute(select(users.c.id).where(users.c.phone == spec["phone"])).first():
                continue
        merchant = spec.get("merchant")
        create_user(kit, phone=spec["phone"], password=spec["password"], display_name=spec["display_name"],
                    role=role, org_code=spec.get("org_code"),
                    merchant_id=demo.stable_id("merchant", merchant) if merchant else None,
                    user_id=demo.stable_id("user", spec["phone"]))
        created = True
    return created


def main() -> None:
    """``python -m services.gateway.seed``: seed the demo data into ``DATABASE_URL`` (after migrating)."""
    from services.gateway.models import metadata
    from shared.service import bootstrap
    seed(bootstrap("gateway", metadata))


if __name__ == "__main__":
    main()

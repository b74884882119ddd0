"""The merchant api process: ``gunicorn "services.merchant.app:create_app()"``."""
from __future__ import annotations

from flask import Flask

from services.merchant.api import blp
from services.merchant.models import metadata
from shared.config import Settings
from shared.service import bootstrap


def create_app(settings: Settings | None = None) -> Flask:
    kit = bootstrap("merchant", metadata, settings)
    return kit.create_app("Guangmang merchant service", lambda app, api: api.register_blueprint(blp))

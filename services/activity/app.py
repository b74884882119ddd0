"""The activity api process: ``gunicorn "services.activity.app:create_app()"``."""
from __future__ import annotations

from flask import Flask

from services.activity.api import blp
from services.activity.models import metadata
from shared.config import Settings
from shared.service import bootstrap


def create_app(settings: Settings | None = None) -> Flask:
    kit = bootstrap("activity", metadata, settings)
    return kit.create_app("Guangmang activity service", lambda app, api: api.register_blueprint(blp))

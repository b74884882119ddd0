"""The points api process: ``gunicorn "services.points.app:create_app()"``."""
from __future__ import annotations

from flask import Flask

from services.points.api import blp
from services.points.models import metadata
from shared.config import Settings
from shared.service import bootstrap


def create_app(settings: Settings | None = None) -> Flask:
    kit = bootstrap("points", metadata, settings)
    return kit.create_app("Guangmang points service", lambda app, api: api.register_blueprint(blp))

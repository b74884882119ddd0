"""The gateway api process: ``gunicorn "services.gateway.app:create_app()"`` — the only public one."""
from __future__ import annotations

from flask import Flask

from services.gateway.api import blp
from services.gateway.clients import Services
from services.gateway.models import metadata
from shared.config import Settings
from shared.service import bootstrap


def create_app(settings: Settings | None = None) -> Flask:
    kit = bootstrap("gateway", metadata, settings)

    def register(app: Flask, api) -> None:  # noqa: ANN001
        api.spec.components.security_scheme(
            "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "the token from POST /api/v1/auth/login or /auth/register"})
        api.spec.options["security"] = [{"bearerAuth": []}]
        api.register_blueprint(blp)

    app = kit.create_app("Guangmang public API", register, internal_auth=False, openapi_prefix="/api/v1")
    app.extensions["guangmang.services"] = Services(dict(kit.settings.service_urls), kit.settings.internal_secret)
    return app

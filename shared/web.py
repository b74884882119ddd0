"""Web helpers every service uses: the app skeleton, one JSON error shape, ops endpoints.

Every error leaves as ``{"error": {"code": "...", "message": "...", "details": {...},
"correlation_id": "..."}}`` with a machine-readable ``code``. Each request carries a correlation
id (``X-Correlation-ID``, made up if absent) into the logs and into the events it writes.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable

from flask import Flask, g, jsonify, request
from flask_smorest import Api
from marshmallow import Schema, fields
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from shared import context, metrics

log = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"


class ApiError(Exception):
    """An error that crosses an HTTP boundary: status, machine-readable code, human message."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None):
    """A response in the house error shape, with the correlation id in force."""
    body = {"error": {"code": code, "message": message, "details": details or {},
                      "correlation_id": context.correlation_id.get()}}
    return jsonify(body), status


_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 415: "unsupported_media_type",
               422: "validation_failed", 429: "too_many_requests"}


class ErrorBody(Schema):
    code = fields.Str(required=True, metadata={"description": "machine-readable, e.g. activity_full"})
    message = fields.Str(required=True, metadata={"description": "for people"})
    details = fields.Dict(metadata={"description": "e.g. fields: {name: [problems]} for validation_failed"})
    correlation_id = fields.Str(allow_none=True)


class ErrorResponse(Schema):
    """The one error shape of every Guangmang HTTP API."""

    error = fields.Nested(ErrorBody, required=True)


class GuangmangApi(Api):
    """flask-smorest Api whose errors use (and document) the house JSON error shape."""

    ERROR_SCHEMA = ErrorResponse

    def handle_http_exception(self, error: HTTPException):  # type: ignore[override]
        status = error.code or 500
        details: dict[str, Any] = {}
        data = getattr(error, "data", None) or {}
        if "messages" in data:
            details = {"fields": data["messages"]}
        message = error.description if status != 422 else "The request is not valid; see details."
        return error_response(status, _HTTP_CODES.get(status, "error"), str(message), details)


ReadinessCheck = Callable[[], None]


def database_check(engine: Engine) -> ReadinessCheck:
    """A /readyz check that the database answers ``SELECT 1``."""
    def check() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    return check


def broker_check(url: str) -> ReadinessCheck:
    """A /readyz check that the broker accepts a connection (always ready in memory)."""
    def check() -> None:
        if url.startswith("memory://"):
            return
        from kombu import Connection
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    return check


def create_base_app(service: str, *, title: str, checks: dict[str, ReadinessCheck],
                    openapi_prefix: str = "/", spec_kwargs: dict[str, Any] | None = None) -> tuple[Flask, GuangmangApi]:
    """A Flask app with the house error shape, correlation ids, metrics and ops endpoints.

    ``checks`` are what ``/readyz`` runs (e.g. database and broker); each raises if not ready.
    """
    app = Flask(service)
    app.config.update(
        API_TITLE=title, API_VERSION="v1", OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=openapi_prefix, OPENAPI_JSON_PATH="openapi.json",
        JSON_AS_ASCII=False,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    api = GuangmangApi(app, spec_kwargs=spec_kwargs or {})

    @app.before_request
    def _begin() -> None:
        g.started = time.perf_counter()
        g.corr_token = context.correlation_id.set(request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4()))

    @app.after_request
    def _finish(response):  # noqa: ANN001
        corr = context.correlation_id.get()
        if corr:
            response.headers[CORRELATION_HEADER] = corr
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.HTTP_REQUESTS.labels(service, request.method, endpoint, response.status_code).inc()
        if "started" in g:
            metrics.HTTP_LATENCY.labels(service, endpoint).observe(time.perf_counter() - g.started)
        return response

    @app.teardown_request
    def _reset(_exc) -> None:  # noqa: ANN001
        token = g.pop("corr_token", None)
        if token is not None:
            context.correlation_id.reset(token)

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err.status, err.code, err.message, err.details)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        if isinstance(err, HTTPException):
            return api.handle_http_exception(err)
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Something went wrong on our side.")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "service": service}

    @app.get("/readyz")
    def readyz():
        failures = {}
        for name, check in checks.items():
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - report, do not crash, when a dependency is down
                failures[name] = f"{type(exc).__name__}: {exc}"[:300]
        if failures:
            return error_response(503, "not_ready", "A dependency is unreachable.", failures)
        return {"status": "ready", "service": service, "checks": sorted(checks)}

    @app.get("/metrics")
    def prometheus_metrics():
        return generate_latest(), 200, {"Content-Type": CONTENT_TYPE_LATEST}

    return app, api

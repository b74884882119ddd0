"""The public OpenAPI document: valid OpenAPI 3, and it documents the routes this code serves."""
from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from services.gateway.app import create_app
from shared.config import Settings

SERVED = {
    "/api/v1/auth/register": {"post"}, "/api/v1/auth/login": {"post"}, "/api/v1/me": {"get"},
    "/api/v1/home": {"get"},
    "/api/v1/activities": {"get", "post"}, "/api/v1/activities/{activity_id}": {"get"},
    "/api/v1/activities/{activity_id}/publish": {"post"}, "/api/v1/activities/{activity_id}/cancel": {"post"},
    "/api/v1/activities/{activity_id}/signups": {"post"},
    "/api/v1/activities/{activity_id}/signups/me": {"delete"},
    "/api/v1/activities/{activity_id}/complete": {"post"},
    "/api/v1/points/balance": {"get"}, "/api/v1/points/transactions": {"get"},
    "/api/v1/merchants": {"get"}, "/api/v1/merchants/{merchant_id}": {"get"},
    "/api/v1/offers": {"get"}, "/api/v1/popups": {"get"},
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    db = tmp_path_factory.mktemp("gw") / "gateway.db"
    app = create_app(Settings(service="gateway", database_url=f"sqlite:///{db}"))
    resp = app.test_client().get("/api/v1/openapi.json")
    assert resp.status_code == 200
    return resp.get_json()


def test_the_public_openapi_document_is_valid_openapi_3(spec):
    validate(spec)


def test_it_documents_every_served_route_and_the_bearer_scheme(spec):
    documented = {path: set(ops) & {"get", "post", "put", "delete", "patch"} for path, ops in spec["paths"].items()}
    for path, methods in SERVED.items():
        assert methods <= documented.get(path, set()), path
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_errors_are_documented_in_the_house_shape(spec):
    assert spec["components"]["schemas"]["ErrorResponse"]["required"] == ["error"]
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) == {"code", "message"}
    default = spec["components"]["responses"]["DEFAULT_ERROR"]["content"]["application/json"]["schema"]
    assert default == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "default" in spec["paths"]["/api/v1/home"]["get"]["responses"]

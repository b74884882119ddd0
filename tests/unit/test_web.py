"""Unit tests of the app skeleton every service shares (``shared/web.py``): one error shape,
correlation ids, readiness and metrics."""
from __future__ import annotations

import uuid

import pytest
from flask import Flask
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from shared import context
from shared.web import ApiError, create_base_app
from tests.support.errors import assert_error_shape


class GreetingIn(Schema):
    name = fields.Str(required=True)
    times = fields.Int(load_default=1, validate=validate.Range(min=1, max=3))


def make_app(checks: dict | None = None, service: str = "webtest") -> Flask:
    app, api = create_base_app(service, title="web test", checks=checks if checks is not None else {})
    blp = Blueprint("greetings", __name__)

    @blp.route("/greetings", methods=["POST"])
    @blp.arguments(GreetingIn, location="json")
    def greet(args):
        return {"greeting": " ".join([f"hello {args['name']}"] * args["times"])}

    @blp.route("/refusal")
    def refuse():
        raise ApiError(409, "stock_exhausted", "No vouchers left.", {"offer_id": "o-1"})

    @blp.route("/boom")
    def boom():
        raise RuntimeError("password=hunter2 in a stack frame")

    @blp.route("/who")
    def who():
        return {"correlation_id": context.correlation_id.get()}

    api.register_blueprint(blp)
    return app


# ---- the error shape -----------------------------------------------------------------------------

def test_an_api_error_leaves_in_the_house_shape_with_its_status_code_and_details() -> None:
    error = assert_error_shape(make_app().test_client().get("/refusal"), 409, "stock_exhausted")
    assert error["message"] == "No vouchers left."
    assert error["details"] == {"offer_id": "o-1"}


def test_an_unknown_route_is_a_404_in_the_house_shape() -> None:
    error = assert_error_shape(make_app().test_client().get("/no/such/route"), 404, "not_found")
    assert error["details"] == {}


def test_a_wrong_method_is_a_405_in_the_house_shape() -> None:
    assert_error_shape(make_app().test_client().delete("/refusal"), 405, "method_not_allowed")


def test_a_schema_validation_failure_is_a_422_naming_the_fields() -> None:
    response = make_app().test_client().post("/greetings", json={"times": 9})
    error = assert_error_shape(response, 422, "validation_failed")
    fields_ = error["details"]["fields"]
    assert set(fields_) == {"json"}
    assert set(fields_["json"]) == {"name", "times"}
    assert all(isinstance(problems, list) and problems for problems in fields_["json"].values())


def test_a_valid_request_passes_the_schema() -> None:
    response = make_app().test_client().post("/greetings", json={"name": "光芒", "times": 2})
    assert response.status_code == 200
    assert response.get_json() == {"greeting": "hello 光芒 hello 光芒"}


def test_an_unhandled_exception_is_a_500_without_leaking_the_stack() -> None:
    response = make_app().test_client().get("/boom")
    error = assert_error_shape(response, 500, "internal_error")
    assert error["details"] == {}
    text = response.get_data(as_text=True)
    for leak in ("hunter2", "Traceback", "RuntimeError", "stack frame"):
        assert leak not in text


# ---- correlation ids ---------------------------------------------------------------------------

def test_a_sent_correlation_id_is_echoed_and_in_force_during_the_request() -> None:
    response = make_app().test_client().get("/who", headers={"X-Correlation-ID": "corr-abc-123"})
    assert response.status_code == 200
    assert response.headers["X-Correlation-ID"] == "corr-abc-123"
    assert response.get_json() == {"correlation_id": "corr-abc-123"}


def test_a_sent_correlation_id_is_echoed_in_an_error() -> None:
    response = make_app().test_client().get("/refusal", headers={"X-Correlation-ID": "corr-err-9"})
    assert assert_error_shape(response, 409, "stock_exhausted")["correlation_id"] == "corr-err-9"


def test_a_missing_correlation_id_is_generated_and_differs_per_request() -> None:
    client = make_app().test_client()
    first, second = client.get("/who"), client.get("/who")
    ids = [r.headers["X-Correlation-ID"] for r in (first, second)]
    assert [str(uuid.UUID(i)) for i in ids] == ids
    assert ids[0] != ids[1]
    assert first.get_json() == {"correlation_id": ids[0]}


def test_the_correlation_id_does_not_outlive_its_request() -> None:
    before = context.correlation_id.get()
    make_app().test_client().get("/who", headers={"X-Correlation-ID": "corr-leak"})
    assert context.correlation_id.get() == before


# ---- ops endpoints -------------------------------------------------------------------------------

def test_healthz_answers_ok_with_the_service_name() -> None:
    response = make_app(service="points").test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "service": "points"}


def test_readyz_is_200_when_every_check_passes() -> None:
    calls: list[str] = []
    checks = {"database": lambda: calls.append("database"), "broker": lambda: calls.append("broker")}
    response = make_app(checks).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "service": "webtest", "checks": ["broker", "database"]}
    assert sorted(calls) == ["broker", "database"]


def test_readyz_is_503_naming_the_failing_check() -> None:
    def broker_down() -> None:
        raise ConnectionRefusedError("amqp://rabbit:5672 refused")

    response = make_app({"database": lambda: None, "broker": broker_down}).test_client().get("/readyz")
    error = assert_error_shape(response, 503, "not_ready")
    assert set(error["details"]) == {"broker"}
    assert error["details"]["broker"].startswith("ConnectionRefusedError")
    assert "refused" in error["details"]["broker"]


def test_readyz_reports_every_failing_check() -> None:
    def down() -> None:
        raise OSError("down")

    response = make_app({"database": down, "broker": down}).test_client().get("/readyz")
    assert set(assert_error_shape(response, 503, "not_ready")["details"]) == {"database", "broker"}


def test_metrics_count_requests_by_service_endpoint_and_status() -> None:
    service = f"web{uuid.uuid4().hex[:8]}"
    client = make_app(service=service).test_client()
    client.get("/refusal")
    client.get("/refusal")
    client.get("/no/such/route")
    text = client.get("/metrics").get_data(as_text=True)
    assert "guangmang_http_requests_total" in text
    lines = [line for line in text.splitlines()
             if line.startswith("guangmang_http_requests_total{") and f'service="{service}"' in line]
    refusals = [line for line in lines if 'endpoint="/refusal"' in line and 'status="409"' in line]
    assert len(refusals) == 1 and refusals[0].endswith(" 2.0")
    assert any('endpoint="unmatched"' in line and 'status="404"' in line for line in lines)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_ops_endpoints_carry_a_correlation_id_too(path: str) -> None:
    response = make_app().test_client().get(path, headers={"X-Correlation-ID": "ops-1"})
    assert response.headers["X-Correlation-ID"] == "ops-1"

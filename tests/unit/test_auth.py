"""Unit tests of the user and internal tokens and the service-side guard (``shared/auth.py``)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jwt
import pytest
from flask import Flask

from shared.auth import (INTERNAL_AUDIENCE, PUBLIC_AUDIENCE, SYSTEM, Principal, current_principal,
                         install_internal_auth, issue_internal_token, issue_user_token, require_role,
                         verify_internal_token, verify_user_token)
from shared.web import ApiError, create_base_app
from tests.support.errors import assert_error_shape

SECRET = "unit-test-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-fedcba9876543210-zyx"
ORGANIZER = Principal(user_id="u-organizer", role="organizer", org_code="tianfu-01")
STAFF = Principal(user_id="u-staff", role="merchant_staff", merchant_id="m-7")


def assert_api_error(exc_info: pytest.ExceptionInfo, status: int, code: str) -> None:
    assert (exc_info.value.status, exc_info.value.code) == (status, code)


# ---- tokens ------------------------------------------------------------------------------------

@pytest.mark.parametrize("principal", [ORGANIZER, STAFF, Principal(user_id="u-res", role="resident")])
def test_a_user_token_round_trips_its_principal(principal: Principal) -> None:
    assert verify_user_token(SECRET, issue_user_token(SECRET, principal)) == principal


@pytest.mark.parametrize("principal", [ORGANIZER, STAFF, SYSTEM])
def test_an_internal_token_round_trips_its_principal(principal: Principal) -> None:
    assert verify_internal_token(SECRET, issue_internal_token(SECRET, principal)) == principal


def test_tokens_carry_their_audience_and_lifetime() -> None:
    before = datetime.now(timezone.utc).timestamp()
    user = jwt.decode(issue_user_token(SECRET, ORGANIZER), SECRET, algorithms=["HS256"], audience=PUBLIC_AUDIENCE)
    internal = jwt.decode(issue_internal_token(SECRET, ORGANIZER), SECRET, algorithms=["HS256"],
                          audience=INTERNAL_AUDIENCE)
    assert 3590 <= user["exp"] - before <= 3610
    assert 50 <= internal["exp"] - before <= 70
    assert user["jti"] != internal["jti"]


def test_an_expired_user_token_is_refused_as_expired() -> None:
    token = issue_user_token(SECRET, ORGANIZER, ttl=timedelta(seconds=-5))
    with pytest.raises(ApiError) as exc_info:
        verify_user_token(SECRET, token)
    assert_api_error(exc_info, 401, "token_expired")


def test_an_expired_internal_token_is_refused_as_expired() -> None:
    token = issue_internal_token(SECRET, ORGANIZER, ttl=timedelta(seconds=-5))
    with pytest.raises(ApiError) as exc_info:
        verify_internal_token(SECRET, token)
    assert_api_error(exc_info, 401, "token_expired")


@pytest.mark.parametrize("verify, issue", [(verify_user_token, issue_user_token),
                                           (verify_internal_token, issue_internal_token)],
                         ids=["user", "internal"])
def test_a_token_signed_with_another_secret_is_invalid(verify, issue) -> None:  # noqa: ANN001
    with pytest.raises(ApiError) as exc_info:
        verify(SECRET, issue(OTHER_SECRET, ORGANIZER))
    assert_api_error(exc_info, 401, "token_invalid")


def test_a_user_token_is_not_an_internal_token() -> None:
    with pytest.raises(ApiError) as exc_info:
        verify_internal_token(SECRET, issue_user_token(SECRET, ORGANIZER))
    assert_api_error(exc_info, 401, "token_invalid")


def test_an_internal_token_is_not_a_user_token() -> None:
    with pytest.raises(ApiError) as exc_info:
        verify_user_token(SECRET, issue_internal_token(SECRET, SYSTEM))
    assert_api_error(exc_info, 401, "token_invalid")


@pytest.mark.parametrize("role", ["superuser", "", "ADMIN"])
def test_a_token_with_an_unknown_role_is_refused(role: str) -> None:
    with pytest.raises(ApiError) as exc_info:
        verify_user_token(SECRET, issue_user_token(SECRET, Principal(user_id="u-x", role=role)))
    assert_api_error(exc_info, 401, "token_invalid")


def test_a_tampered_payload_is_invalid() -> None:
    header, _payload, signature = issue_user_token(SECRET, Principal(user_id="u-res", role="resident")).split(".")
    forged_payload = jwt.encode({"sub": "u-res", "role": "admin", "aud": PUBLIC_AUDIENCE,
                                 "exp": datetime.now(timezone.utc) + timedelta(hours=1)},
                                OTHER_SECRET, algorithm="HS256").split(".")[1]
    with pytest.raises(ApiError) as exc_info:
        verify_user_token(SECRET, f"{header}.{forged_payload}.{signature}")
    assert_api_error(exc_info, 401, "token_invalid")


def test_an_unsigned_token_is_invalid() -> None:
    token = jwt.encode({"sub": "u-x", "role": "admin", "aud": PUBLIC_AUDIENCE,
                        "exp": datetime.now(timezone.utc) + timedelta(hours=1)}, key=None, algorithm="none")
    with pytest.raises(ApiError) as exc_info:
        verify_user_token(SECRET, token)
    assert_api_error(exc_info, 401, "token_invalid")


def test_a_token_without_expiry_is_invalid() -> None:
    token = jwt.encode({"sub": "u-x", "role": "resident", "aud": PUBLIC_AUDIENCE}, SECRET, algorithm="HS256")
    with pytest.raises(ApiError) as exc_info:
        verify_user_token(SECRET, token)
    assert_api_error(exc_info, 401, "token_invalid")


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c"])
def test_garbage_is_invalid(garbage: str) -> None:
    with pytest.raises(ApiError) as exc_info:
        verify_internal_token(SECRET, garbage)
    assert_api_error(exc_info, 401, "token_invalid")


# ---- the service-side guard ------------------------------------------------------------------

def guarded_app(*, auth: bool = True) -> Flask:
    app, _api = create_base_app("authtest", title="auth test", checks={})
    if auth:
        install_internal_auth(app, SECRET)

    @app.get("/things")
    def things():
        return {"user_id": current_principal().user_id}

    @app.get("/admin-only")
    @require_role("admin")
    def admin_only():
        return {"ok": True, "role": current_principal().role}

    @app.post("/staff-or-organizer")
    @require_role("merchant_staff", "organizer")
    def staff_or_organizer():
        return {"ok": True}

    return app


def bearer(principal: Principal, *, internal: bool = True, secret: str = SECRET) -> dict[str, str]:
    issue = issue_internal_token if internal else issue_user_token
    return {"Authorization": f"Bearer {issue(secret, principal)}"}


def test_a_route_without_a_token_answers_401_in_the_house_shape() -> None:
    response = guarded_app().test_client().get("/things")
    assert_error_shape(response, 401, "unauthenticated")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token-without-scheme"])
def test_a_malformed_authorization_header_is_unauthenticated(header: str) -> None:
    response = guarded_app().test_client().get("/things", headers={"Authorization": header})
    assert_error_shape(response, 401, "unauthenticated")


def test_a_route_with_a_valid_internal_token_answers_200_as_the_principal() -> None:
    response = guarded_app().test_client().get("/things", headers=bearer(ORGANIZER))
    assert response.status_code == 200
    assert response.get_json() == {"user_id": "u-organizer"}


def test_the_bearer_scheme_is_case_insensitive() -> None:
    token = issue_internal_token(SECRET, ORGANIZER)
    response = guarded_app().test_client().get("/things", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


def test_a_user_token_does_not_open_a_service_route() -> None:
    response = guarded_app().test_client().get("/things", headers=bearer(ORGANIZER, internal=False))
    assert_error_shape(response, 401, "token_invalid")


def test_an_internal_token_of_another_secret_does_not_open_a_service_route() -> None:
    response = guarded_app().test_client().get("/things", headers=bearer(ORGANIZER, secret=OTHER_SECRET))
    assert_error_shape(response, 401, "token_invalid")


def test_an_expired_internal_token_answers_token_expired() -> None:
    token = issue_internal_token(SECRET, ORGANIZER, ttl=timedelta(seconds=-1))
    response = guarded_app().test_client().get("/things", headers={"Authorization": f"Bearer {token}"})
    assert_error_shape(response, 401, "token_expired")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_ops_endpoints_are_open_without_a_token(path: str) -> None:
    response = guarded_app().test_client().get(path)
    assert response.status_code == 200


def test_require_role_refuses_another_role_with_403() -> None:
    client = guarded_app().test_client()
    error = assert_error_shape(client.get("/admin-only", headers=bearer(ORGANIZER)), 403, "forbidden_role")
    assert "admin" in error["message"]
    assert_error_shape(client.post("/staff-or-organizer", headers=bearer(Principal("u-r", "resident"))),
                       403, "forbidden_role")


def test_require_role_allows_a_listed_role() -> None:
    client = guarded_app().test_client()
    admin = Principal(user_id="u-admin", role="admin", org_code="tianfu")
    assert client.get("/admin-only", headers=bearer(admin)).get_json() == {"ok": True, "role": "admin"}
    assert client.post("/staff-or-organizer", headers=bearer(STAFF)).status_code == 200
    assert client.post("/staff-or-organizer", headers=bearer(ORGANIZER)).status_code == 200


def test_require_role_always_allows_the_system_principal() -> None:
    response = guarded_app().test_client().get("/admin-only", headers=bearer(SYSTEM))
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "role": "system"}


def test_require_role_without_any_principal_is_unauthenticated() -> None:
    response = guarded_app(auth=False).test_client().get("/admin-only")
    assert_error_shape(response, 401, "unauthenticated")

"""Tokens: the public user token (issued by the gateway) and the internal service token.

- A **user token** is a signed JWT (HS256, ``aud=guangmang-public``) the gateway hands a client
  at login; it lives an hour.
- An **internal token** is a signed JWT (HS256, separate secret, ``aud=guangmang-internal``)
  the gateway mints per call to a service, carrying the acting user; it lives 60 seconds. Every
  service route except the ops endpoints refuses a call without a valid one (401).
"""
from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import jwt
from flask import Flask, g, request

from shared.web import ApiError

PUBLIC_AUDIENCE = "guangmang-public"
INTERNAL_AUDIENCE = "guangmang-internal"
ROLES = ("resident", "organizer", "merchant_staff", "admin")
OPEN_PATHS = ("/healthz", "/readyz", "/metrics")


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user with a role, an organisation and (for staff) a merchant."""

    user_id: str
    role: str
    org_code: str | None = None
    merchant_id: str | None = None

    @property
    def is_system(self) -> bool:
        return self.role == "system"

    def claims(self) -> dict[str, Any]:
        return {"sub": self.user_id, "role": self.role, "org": self.org_code, "merchant": self.merchant_id}

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> "Principal":
        return cls(user_id=claims["sub"], role=claims["role"], org_code=claims.get("org"),
                   merchant_id=claims.get("merchant"))


SYSTEM = Principal(user_id="system:gateway", role="system")


def _issue(secret: str, audience: str, principal: Principal, ttl: timedelta) -> str:
    now = datetime.now(timezone.utc)
    claims = {**principal.claims(), "aud": audience, "iat": now, "exp": now + ttl, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, secret, algorithm="HS256")


def _verify(secret: str, audience: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=audience,
                            options={"require": ["exp", "sub", "aud"]})
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token_expired", "The token has expired; sign in again.") from None
    except jwt.InvalidTokenError:
        raise ApiError(401, "token_invalid", "The token is not valid.") from None
    if claims.get("role") not in (*ROLES, "system"):
        raise ApiError(401, "token_invalid", "The token carries no known role.")
    return Principal.from_claims(claims)


def issue_user_token(secret: str, principal: Principal, ttl: timedelta = timedelta(hours=1)) -> str:
    """A signed public token for ``principal`` (returned by ``POST /auth/login``)."""
    return _issue(secret, PUBLIC_AUDIENCE, principal, ttl)


def verify_user_token(secret: str, token: str) -> Principal:
    """The principal of a public token; raises ApiError(401) if invalid or expired."""
    return _verify(secret, PUBLIC_AUDIENCE, token)


def issue_internal_token(secret: str, principal: Principal, ttl: timedelta = timedelta(seconds=60)) -> str:
    """A short-lived token the gateway sends with each call to a service."""
    return _issue(secret, INTERNAL_AUDIENCE, principal, ttl)


def verify_internal_token(secret: str, token: str) -> Principal:
    """The principal an internal token carries; raises ApiError(401) if invalid or expired."""
    return _verify(secret, INTERNAL_AUDIENCE, token)


def bearer_token() -> str | None:
    """The token of the request's ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def install_internal_auth(app: Flask, secret: str) -> None:
    """Require a valid internal token on every route of a service except the ops endpoints."""

    @app.before_request
    def _require_internal_token() -> None:
        if request.path in OPEN_PATHS or request.method == "OPTIONS":
            return
        token = bearer_token()
        if not token:
            raise ApiError(401, "unauthenticated", "This service only answers the gateway.")
        g.principal = verify_internal_token(secret, token)


def current_principal() -> Principal:
    """Who is acting in this request (set by the internal-token guard); 401 if nobody."""
    principal = g.get("principal")
    if principal is None:
        raise ApiError(401, "unauthenticated", "Sign in first.")
    return principal


def require_role(*roles: str) -> Callable:
    """Route decorator: the acting principal must hold one of ``roles`` (system always may)."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal.role not in roles and not principal.is_system:
                raise ApiError(403, "forbidden_role", f"This needs the role {' or '.join(roles)}.")
            return view(*args, **kwargs)
        return wrapper
    return decorate

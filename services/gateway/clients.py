"""HTTP clients of the internal services, each call carrying a fresh internal token."""
from __future__ import annotations

import logging
from typing import Any

import requests

from shared import context
from shared.auth import Principal, issue_internal_token
from shared.web import CORRELATION_HEADER, ApiError

log = logging.getLogger(__name__)


class ServiceUnavailable(ApiError):
    def __init__(self, service: str, reason: str) -> None:
        super().__init__(503, "service_unavailable", f"The {service} service is unavailable right now.",
                         {"service": service, "reason": reason[:200]})
        self.service = service


class ServiceClient:
    """Calls one internal service; its errors come back as :class:`ApiError` with the service's code."""

    def __init__(self, name: str, base_url: str, secret: str, timeout: float = 5.0) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.timeout = timeout
        self.http = requests.Session()

    def call(self, method: str, path: str, principal: Principal, *, json: Any = None,
             params: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {issue_internal_token(self.secret, principal)}"}
        corr = context.correlation_id.get()
        if corr:
            headers[CORRELATION_HEADER] = corr
        try:
            resp = self.http.request(method, f"{self.base_url}{path}", json=json, params=params,
                                     headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            log.warning("%s unreachable: %s", self.name, exc)
            raise ServiceUnavailable(self.name, str(exc)) from None
        if resp.status_code >= 500:
            raise ServiceUnavailable(self.name, f"HTTP {resp.status_code}")
        body = resp.json() if resp.content else None
        if resp.status_code >= 400:
            err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            raise ApiError(resp.status_code, err.get("code", "error"), err.get("message", "Request refused."),
                           err.get("details"))
        return body


class Services:
    """The three internal services the gateway talks to."""

    def __init__(self, urls: dict[str, str], secret: str) -> None:
        self.activity = ServiceClient("activity", urls.get("activity", "http://127.0.0.1:8001"), secret)
        self.points = ServiceClient("points", urls.get("points", "http://127.0.0.1:8002"), secret)
        self.merchant = ServiceClient("merchant", urls.get("merchant", "http://127.0.0.1:8003"), secret)

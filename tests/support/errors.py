"""The house JSON error shape, as tests check it on a Flask test-client response."""
from __future__ import annotations


def assert_error_shape(response, status: int, code: str) -> dict:  # noqa: ANN001
    """Assert ``{"error": {code, message, details, correlation_id}}`` with ``status``; return the error."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "correlation_id"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert error["correlation_id"] and error["correlation_id"] == response.headers["X-Correlation-ID"]
    return error

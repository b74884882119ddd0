"""Unit tests of JSON log lines and the correlation context (``shared/logging.py``,
``shared/context.py``)."""
from __future__ import annotations

import contextvars
import io
import json
import logging
import uuid

import pytest

from shared import context
from shared.context import correlated
from shared.logging import JsonFormatter


@pytest.fixture
def captured():
    """A logger writing JSON lines into a buffer; yields (logger, read_lines)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("points"))
    logger = logging.getLogger(f"test.json.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[dict]:
        raw = buffer.getvalue().splitlines()
        return [json.loads(line) for line in raw]

    lines.raw = buffer.getvalue  # type: ignore[attr-defined]
    yield logger, lines
    logger.removeHandler(handler)


def in_fresh_context(fn):  # noqa: ANN001, ANN201
    """Run ``fn`` where no correlation id was ever set (independent of other tests)."""
    return contextvars.Context().run(fn)


def test_one_json_object_per_line_with_service_level_and_message(captured) -> None:  # noqa: ANN001
    logger, lines = captured

    def work() -> None:
        logger.info("credited %s points", 20)
        logger.warning("second line\nwith a newline inside")

    in_fresh_context(work)
    first, second = lines()  # exactly two lines: the embedded newline is escaped
    assert first["service"] == "points"
    assert first["level"] == "INFO"
    assert first["message"] == "credited 20 points"
    assert first["logger"] == logger.name
    assert first["time"].endswith("+00:00")
    assert second["level"] == "WARNING"
    assert second["message"] == "second line\nwith a newline inside"


def test_the_correlation_id_in_force_is_on_the_line_and_absent_outside(captured) -> None:  # noqa: ANN001
    logger, lines = captured

    def work() -> None:
        logger.info("before")
        with correlated("corr-42", "cause-7"):
            logger.info("inside")
            assert context.causation_id.get() == "cause-7"
        logger.info("after")

    in_fresh_context(work)
    before, inside, after = lines()
    assert "correlation_id" not in before
    assert inside["correlation_id"] == "corr-42"
    assert "correlation_id" not in after


def test_nested_correlations_restore_the_outer_one(captured) -> None:  # noqa: ANN001
    logger, lines = captured

    def work() -> None:
        with correlated("outer"):
            with correlated("inner"):
                logger.info("in inner")
            logger.info("back in outer")

    in_fresh_context(work)
    assert [line["correlation_id"] for line in lines()] == ["inner", "outer"]


def test_correlated_without_an_id_makes_one_up() -> None:
    def work() -> tuple[str | None, str]:
        with correlated(None):
            inside = context.correlation_id.get()
            return inside, context.current_correlation_id()

    inside, current = in_fresh_context(work)
    assert inside is not None and str(uuid.UUID(inside)) == inside
    assert current == inside


def test_the_context_is_restored_when_the_block_raises() -> None:
    def work() -> str | None:
        with pytest.raises(KeyError):
            with correlated("doomed"):
                raise KeyError("boom")
        return context.correlation_id.get()

    assert in_fresh_context(work) is None


def test_event_fields_and_exceptions_are_carried(captured) -> None:  # noqa: ANN001
    logger, lines = captured

    def work() -> None:
        try:
            raise ValueError("bad amount")
        except ValueError:
            logger.exception("handler failed", extra={"event_id": "e-1", "event_type": "t", "queue": "points.q"})

    in_fresh_context(work)
    [line] = lines()
    assert line["level"] == "ERROR"
    assert (line["event_id"], line["event_type"], line["queue"]) == ("e-1", "t", "points.q")
    assert "ValueError: bad amount" in line["exc"]


def test_non_ascii_stays_readable(captured) -> None:  # noqa: ANN001
    logger, lines = captured
    in_fresh_context(lambda: logger.info("光芒 志愿者"))
    [line] = lines()
    assert line["message"] == "光芒 志愿者"
    assert "光芒 志愿者" in lines.raw()  # not \\u escapes

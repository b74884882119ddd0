"""Prometheus metrics shared by every process (one registry per process, labelled by service)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "guangmang_http_requests_total", "HTTP requests served", ["service", "method", "endpoint", "status"])
HTTP_LATENCY = Histogram(
    "guangmang_http_request_seconds", "HTTP request latency", ["service", "endpoint"])
EVENTS_PUBLISHED = Counter(
    "guangmang_events_published_total", "Outbox rows published to the bus", ["service", "event"])
PUBLISH_FAILURES = Counter(
    "guangmang_publish_failures_total", "Outbox rows the broker refused (unroutable or nacked)", ["service", "event"])
OUTBOX_BACKLOG = Gauge(
    "guangmang_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "guangmang_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", ["service"])
EVENTS_CONSUMED = Counter(
    "guangmang_events_consumed_total", "Deliveries handled, by outcome", ["queue", "outcome"])

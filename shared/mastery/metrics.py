"""Prometheus metrics shared by every function and the consumer (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["EVENTS", "REQUESTS", "REQUEST_ERRORS", "REQUEST_LATENCY"]

REQUESTS = Counter(
    "mastery_requests_total", "HTTP requests answered.", ["function", "route", "method", "status"]
)
REQUEST_ERRORS = Counter(
    "mastery_request_errors_total", "HTTP requests answered with 5xx.", ["function", "route"]
)
REQUEST_LATENCY = Histogram(
    "mastery_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["function", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EVENTS = Counter(
    "mastery_events_total",
    "Learning events by outcome: applied, duplicate, dead_lettered.",
    ["outcome"],
)

"""Prometheus metrics shared by every function and worker (one registry per process).

Names follow Prometheus conventions: base units (seconds), counters end in ``_total``.
Labels are bounded: functions, route templates, outcomes, reason classes, priorities.
infra/observability (dashboard and alerting rules) uses only these names; a test
checks it against this registry.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram

from mastery.domain.batch import Priority
from mastery.policy import Role
from mastery.ports import Outcome

__all__ = [
    "BATCHES",
    "BATCHES_RUNNING",
    "BATCHES_SUBMITTED",
    "BATCH_DURATION",
    "BATCH_STATUSES",
    "BATCH_STUDENTS",
    "BUILD_INFO",
    "CONSUMER_BACKLOG",
    "CONSUMER_LAG",
    "CONSUMER_LAG_MESSAGES",
    "CONSUMER_LAST_APPLIED",
    "CONSUMER_RETRIES",
    "DEAD_LETTERS",
    "DLQ_REASONS",
    "EVENTS",
    "EVENT_AGE",
    "LEVEL_CHANGES",
    "MCP_TOOL_CALLS",
    "RATE_LIMITED",
    "READY",
    "REQUESTS",
    "REQUEST_ERRORS",
    "REQUEST_LATENCY",
    "dlq_reason",
    "event_outcome",
    "retry_reason",
]

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
READY = Gauge(
    "mastery_ready",
    "1 when the function's last /ready check passed, else 0 (per dependency check).",
    ["function", "check"],
)
RATE_LIMITED = Counter(
    "mastery_rate_limited_total", "Requests refused with 429 by the per-caller limit.", ["role"]
)
MCP_TOOL_CALLS = Counter(
    "mastery_mcp_tool_calls_total",
    "MCP tool calls by tool (? for an unknown name) and the status of their problem (200: "
    "answered); a failed call is an isError result inside an HTTP 200.",
    ["tool", "status"],
)

EVENTS = Counter(
    "mastery_events_total",
    "Learning events by outcome: applied, duplicate, erased, ignored, voiding, voided, "
    "dead_lettered.",
    ["outcome"],
)
#: Seconds from minutes to the 90-day window: events may arrive late by design (backfills).
_AGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400, 604800)
EVENT_AGE = Histogram(
    "mastery_event_age_seconds",
    "Time from an applied event's occurred_at to its application in Redis.",
    buckets=_AGE_BUCKETS,
)
CONSUMER_LAG = Histogram(
    "mastery_consumer_lag_seconds",
    "mastery consume: time from a record's Kafka timestamp to its batch applied in Redis.",
    ["topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
CONSUMER_LAG_MESSAGES = Histogram(
    "mastery_consumer_lag_messages",
    "mastery consume: records behind the end of each assigned partition, every 5 s.",
    ["topic"],
    buckets=(0, 1, 10, 100, 1000, 10_000, 100_000, 1_000_000),
)
# A stuck mastery consume (MasteryConsumerStuck): measured whether its batches apply or not.
CONSUMER_BACKLOG = Gauge(
    "mastery_consumer_backlog_messages",
    "mastery consume: records past the applied ones in this process's assigned partitions "
    "(sampled every 5 s).",
    ["topic"],
)
CONSUMER_LAST_APPLIED = Gauge(
    "mastery_consumer_last_applied_timestamp_seconds",
    "mastery consume: Unix time its last batch was applied (its start, until one is).",
)
CONSUMER_RETRIES = Counter(
    "mastery_consumer_retries",
    "mastery consume: retries of a batch or of its applied offsets, by the dependency down.",
    ["reason"],
)
_DEPENDENCIES = ("redis", "kafka")


def retry_reason(error: BaseException) -> str:
    """The dependency an ``Unavailable`` names first (``redis: ...``), else ``other``."""
    named = str(error).split(":", 1)[0]
    return named if named in _DEPENDENCIES else "other"


DEAD_LETTERS = Counter(
    "mastery_dead_letters_total",
    "Records written to a DLQ, by reason class (dlq_reason header holds the detail).",
    ["reason"],
)
LEVEL_CHANGES = Counter(
    "mastery_level_changes_total",
    "Level changes announced on mastery.level-changed.",
    ["direction"],
)

BATCHES_SUBMITTED = Counter(
    "mastery_batches_submitted_total", "Async batch runs queued on a batch topic.", ["priority"]
)
BATCHES = Counter("mastery_batches_total", "Batch runs finished, by final status.", ["status"])
#: ``BatchRunner``'s outcomes, and ``error`` for a run that raised.
BATCH_STATUSES = ("done", "yielded", "already_final", "missing", "error")
BATCHES_RUNNING = Gauge("mastery_batches_running", "Batch runs this process is running now.")
BATCH_DURATION = Histogram(
    "mastery_batch_duration_seconds",
    "Wall time of one batch run (this worker's part of it).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BATCH_STUDENTS = Counter(
    "mastery_batch_students_total",
    "Students evaluated by batch runs (rate(): students per second).",
)

BUILD_INFO = Gauge(
    "mastery_build_info", "Always 1: the engine's version and Python.", ["version", "python"]
)


def _version() -> str:
    try:
        return metadata.version("mastery-engine")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version()).set(1)

#: Reason classes of ``InvalidEvent`` messages, first match wins (bounded label values).
_REASONS = (
    ("missing_attribute", re.compile(r"^missing CloudEvent attribute|must be a string")),
    ("unsupported_format", re.compile(r"^unsupported |^Avro data must be binary|UTF-8")),
    ("unknown_type", re.compile(r"^unknown event type")),
    ("wrong_topic", re.compile(r"does not belong on topic")),
    (
        "malformed",
        re.compile(
            r"^malformed |^empty record|base64|must be a JSON object|"
            r"must be an object|^ce_id longer"
        ),
    ),
    ("too_old", re.compile(r"older than|before the window|outside the window")),
    ("in_future", re.compile(r"in the future")),
    ("day_full", re.compile(r"a day record holds no more")),
    ("conflict", re.compile(r"differs from the one held under its id")),
)


#: Every class ``dlq_reason`` may answer.
DLQ_REASONS = (*(label for label, _ in _REASONS), "invalid_field")


def dlq_reason(reason: str) -> str:
    """The bounded class of a dead-letter reason (``invalid_field`` when none matches)."""
    for label, pattern in _REASONS:
        if pattern.search(reason):
            return label
    return "invalid_field"


def event_outcome(outcome: Outcome) -> str:
    """An event's ``mastery_events_total`` outcome: the audit's name, a rejected one's
    ``dead_lettered``."""
    return "dead_lettered" if outcome is Outcome.REJECTED else outcome.value


def _zero() -> None:
    """Every label value known before anything happens, exported at 0 from the start.

    A series born at its first increment hides that increment from ``increase()`` and
    ``rate()`` (they need two samples), so an alert missed each new pod's first burst,
    and with scale to zero most pods are new. Routes are per function (``FunctionApp``).
    """
    for reason in DLQ_REASONS:
        DEAD_LETTERS.labels(reason)
    for outcome in Outcome:
        EVENTS.labels(event_outcome(outcome))
    for status in BATCH_STATUSES:
        BATCHES.labels(status)
    for direction in ("up", "down"):
        LEVEL_CHANGES.labels(direction)
    for role in Role:
        RATE_LIMITED.labels(role.value)
    for priority in Priority:
        BATCHES_SUBMITTED.labels(priority.value)
    for dependency in (*_DEPENDENCIES, "other"):
        CONSUMER_RETRIES.labels(dependency)


_zero()

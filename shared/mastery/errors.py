"""The exception root of the package.

MasteryError
 ├── InvalidEvent           an event that can never be applied: dead-letter it with .reason
 ├── IgnoredEvent           a valid event that feeds nothing (an unmapped xAPI verb): count it
 ├── OffsetsMoved           a tenant's applied offsets in Redis are not what the consumer
 │                          wrote (a failover lost writes, or a rebalance): re-read them
 └── Unavailable            a dependency (Redis, Kafka) is down: retry later, 503 over HTTP
      └── Misconfigured     it refuses our credentials or certificate, or the settings do
                            not validate: retrying will not help
"""

from __future__ import annotations

__all__ = [
    "IgnoredEvent",
    "InvalidEvent",
    "MasteryError",
    "Misconfigured",
    "OffsetsMoved",
    "Unavailable",
    "root_cause",
    "why",
]


class MasteryError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidEvent(MasteryError):
    """A learning event that fails decoding or validation; ``reason`` says why.

    ``event_id``: the event's id, when it is known but not from the record's ``ce_id``
    (an xAPI statement's ``id``), for the dead letter's log line.
    """

    def __init__(self, reason: str, tenant: str | None = None, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tenant = tenant
        self.event_id = event_id


class IgnoredEvent(MasteryError):
    """A valid event that feeds no component (an xAPI verb the mapping does not know).

    What is known of it goes into its audit record: ``tenant`` (whose stream records
    it), ``student_id``, ``event_id``.
    """

    def __init__(
        self,
        reason: str,
        tenant: str | None = None,
        student_id: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tenant = tenant
        self.student_id = student_id
        self.event_id = event_id


class Unavailable(MasteryError):
    """Redis or the broker cannot be reached; the work can be retried later."""


class OffsetsMoved(MasteryError):
    """A tenant's applied offset for ``field`` is ``stored`` in Redis, not what was expected."""

    def __init__(self, tenant: str, field: str, stored: str) -> None:
        super().__init__(f"applied offsets of {tenant} moved: {field} is {stored or 'absent'}")
        self.tenant = tenant
        self.field = field
        self.stored = stored


class Misconfigured(Unavailable):
    """Redis or the broker answers but refuses us (a wrong password, an untrusted
    certificate), or a setting does not validate (``mastery.settings.load``)."""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception ``exc`` was raised from or while handling."""
    seen = {id(exc)}
    while (inner := _inner(exc)) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _inner(exc: BaseException) -> BaseException | None:
    if exc.__cause__ is not None:
        return exc.__cause__
    return None if exc.__suppress_context__ else exc.__context__


def why(exc: BaseException) -> str:
    """``exc``'s message on one line, with its root cause when the message does not say it.

    redis-py, for one, reports a refused TLS certificate as a bare ``ConnectionError``.
    """
    text = str(exc)
    root = root_cause(exc)
    detail = str(root)
    if root is not exc and detail and detail not in text:
        text = f"{text}: {type(root).__name__}: {detail}" if text else detail
    return " ".join(text.split())

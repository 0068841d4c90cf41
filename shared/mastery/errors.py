"""The exception root of the package.

MasteryError
 ├── InvalidEvent           an event that can never be applied: dead-letter it with .reason
 ├── OffsetsMoved           a tenant's applied offsets in Redis are not what the consumer
 │                          wrote (a failover lost writes, or a rebalance): re-read them
 └── Unavailable            a dependency (Redis, Kafka) is down: retry later, 503 over HTTP
"""

from __future__ import annotations

__all__ = ["InvalidEvent", "MasteryError", "OffsetsMoved", "Unavailable"]


class MasteryError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidEvent(MasteryError):
    """A learning event that fails decoding or validation; ``reason`` says why."""

    def __init__(self, reason: str, tenant: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tenant = tenant


class Unavailable(MasteryError):
    """Redis or the broker cannot be reached; the work can be retried later."""


class OffsetsMoved(MasteryError):
    """A tenant's applied offset for ``field`` is ``stored`` in Redis, not what was expected."""

    def __init__(self, tenant: str, field: str, stored: str) -> None:
        super().__init__(f"applied offsets of {tenant} moved: {field} is {stored or 'absent'}")
        self.tenant = tenant
        self.field = field
        self.stored = stored

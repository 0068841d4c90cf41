"""The exception root of the package.

MasteryError
 ├── InvalidEvent           an event that can never be applied: dead-letter it with .reason
 └── Unavailable            a dependency (Redis, Kafka) is down: retry later, 503 over HTTP
"""

from __future__ import annotations

__all__ = ["InvalidEvent", "MasteryError", "Unavailable"]


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

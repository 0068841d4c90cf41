"""Redis adapters: the event store, its key layout, rate limits and retention checks."""

from mastery.store.repository import (
    UNKNOWN_TENANT,
    Applied,
    AuditEntry,
    Outcome,
    RedisStore,
    Rejection,
    StudentDays,
)

__all__ = [
    "UNKNOWN_TENANT",
    "Applied",
    "AuditEntry",
    "Outcome",
    "RedisStore",
    "Rejection",
    "StudentDays",
]

"""Redis adapters: the event store, its key layout, rate limits and retention checks."""

from mastery.offsets import OffsetBook
from mastery.ports import Applied, Note, Outcome, Unapplied
from mastery.store.connection import RedisConnection
from mastery.store.erasure import AuditEntry
from mastery.store.event_writes import UNKNOWN_TENANT
from mastery.store.records import StatementRecord
from mastery.store.repository import RedisStore
from mastery.store.student_reads import StudentDays

__all__ = [
    "UNKNOWN_TENANT",
    "Applied",
    "AuditEntry",
    "Note",
    "OffsetBook",
    "Outcome",
    "RedisConnection",
    "RedisStore",
    "StatementRecord",
    "StudentDays",
    "Unapplied",
]

"""The Redis adapter the engine's functions use: event writes, student reads, erasure.

Each job lives in its own module over the shared ``RedisConnection``; ``RedisStore`` is
all three on one client.
"""

from __future__ import annotations

from mastery.store.erasure import Erasure
from mastery.store.event_writes import EventWrites
from mastery.store.student_reads import StudentReads

__all__ = ["RedisStore"]


class RedisStore(EventWrites, StudentReads, Erasure):
    """Per-student state in Redis, as laid out in ``mastery.store.keys``."""

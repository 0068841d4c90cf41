"""Redis key layout. Every key is namespaced by tenant; one student's keys share a hash slot.

    m:{<tenant>:<student>}:state        hash: decayed sums per component/area, version, classes
    m:{<tenant>:<student>}:days         string: packed per-day snapshots (see DAY_RECORD)
    m:{<tenant>:<student>}:seen:<n>     set of 64-bit event-id hashes, 30-day bucket n
    m:{<tenant>:<student>}:prediction   string: cached prediction (JSON with the state version
                                        and day it was made for), TTL 1 hour
    m:{<tenant>}:audit                  stream: every event's outcome (applied/duplicate/rejected)
    m:{<tenant>}:rl:<role>:<subject>    string: the caller's GCRA arrival time (rate limits)

Ids are validated against ``mastery.events.models.ID_PATTERN`` before they get here,
so they hold no ``{``, ``}``, ``:`` or spaces.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = [
    "DAY_RECORD",
    "SEEN_BUCKET_DAYS",
    "audit",
    "days",
    "event_hash",
    "prediction",
    "rate_limit",
    "seen",
    "seen_bucket",
    "state",
    "student_prefix",
]

#: One day snapshot: day number since the decay origin, then each component's score
#: as 0..10000 (65535 = not observed), in ``Component`` order. 10 bytes a day.
DAY_RECORD = struct.Struct("<HHHHH")
SEEN_BUCKET_DAYS = 30


def student_prefix(tenant: str, student: str) -> str:
    return f"m:{{{tenant}:{student}}}:"


def state(tenant: str, student: str) -> str:
    return f"m:{{{tenant}:{student}}}:state"


def days(tenant: str, student: str) -> str:
    return f"m:{{{tenant}:{student}}}:days"


def prediction(tenant: str, student: str) -> str:
    return f"m:{{{tenant}:{student}}}:prediction"


def seen(tenant: str, student: str, bucket: int) -> str:
    return f"m:{{{tenant}:{student}}}:seen:{bucket}"


def audit(tenant: str) -> str:
    return f"m:{{{tenant}}}:audit"


def rate_limit(tenant: str, role: str, subject: str) -> str:
    return f"m:{{{tenant}}}:rl:{role}:{subject}"


def seen_bucket(epoch_day: int) -> int:
    """Events are deduplicated within fixed 30-day buckets of their own ``occurred_at``.

    The bucket depends only on the event, so a redelivery always meets its first copy.
    """
    return epoch_day // SEEN_BUCKET_DAYS


def event_hash(event_id: str) -> int:
    """A signed 64-bit digest of the event id: stored as an integer, Redis packs 8 bytes each.

    Two ids of one student colliding within a bucket is ~1e-14 likely at 500 events.
    """
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), signed=True)

"""Redis key layout. Every key is namespaced by its tenant, whose name is the hash tag.

A tenant (a school) is the shard unit: all of its keys live in one Redis Cluster slot,
so every script that applies events, erases a student or compares a cohort touches one
slot (docs/decisions.md, "Redis Cluster", gives the trade-off).

    m:{<tenant>}:s:<student>:state      hash: decayed sums per component/area, version, classes
                                        ("<class>:<day>,...", records.class_days), born
                                        (apply.lua: which of the student's states it is)
    m:{<tenant>}:s:<student>:days       string: packed day records (see DAY_HEADER)
    m:{<tenant>}:s:<student>:seen:<n>   set of 64-bit event-id hashes, 30-day bucket n
    m:{<tenant>}:s:<student>:prediction string: cached prediction (JSON with the state stamp,
                                        StudentDays.stamp, and day it was made for), TTL 1 hour
    m:{<tenant>}:s:<student>:history    string: the last JSON history answered, after a line
                                        naming its state stamp, day and range, TTL 1 hour
    m:{<tenant>}:s:<student>:xapi       hash: xAPI statement id hash (event_hash) -> what it
                                        added and the digest of what it said, packed
                                        (apply.lua), or a voided mark: what a voiding
                                        subtracts, the ids voided, and what a statement
                                        resent under a held id must say (window long)
    m:{<tenant>}:audit                  stream: every event's outcome (applied, duplicate,
                                        erased, rejected, ignored, voiding, voided)
    m:{<tenant>}:outbox                 stream: level changes not yet published to Kafka
    m:{<tenant>}:offsets:<group>        hash: "<topic>:<partition>" -> the next offset of that
                                        partition whose events of this tenant are not all
                                        applied (written with them: mastery.events.consumer)
    m:{<tenant>}:rl:<role>:<subject>    string: the caller's GCRA arrival time (rate limits)
    m:{<tenant>}:erased                 zset: erased student -> erasure time (ms), tombstones
    m:{<tenant>}:active                 zset: student -> last write of their state (s)
    m:{<tenant>}:cohort:t:<metric>      zset: student -> score x 10000, metric "mastery" or
                                        a component: the tenant's index
    m:{<tenant>}:cohort:t:sum           hash: metric -> sum of that zset's scores
    m:{<tenant>}:cohort:c:<class>       hash: student -> "m,c1,c2,c3,c4" (the five scores
                                        x 10000): a class's index
    m:{<tenant>}:cohort:classes         hash: student -> their classes (to leave the indexes)
    m:{<tenant>}:batch:<id>             hash: a batch run's request, status and summary (24 h)
    m:{<tenant>}:batch:<id>:results     hash: student -> that student's result (JSON), 24 h
    m:{<tenant>}:batches                zset: batch id -> submission time (ms), the live ones

The cohort index keys of a tenant are declared to every script that touches them
(``tenant_keys``); a class's index is named inside the script from the student's
classes, under the same hash tag.

Ids are validated against ``mastery.events.models.ID_PATTERN`` before they get here,
so they hold no ``{``, ``}``, ``:`` or spaces.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = [
    "DAY_COMPONENT",
    "DAY_HEADER",
    "DAY_TRAILER",
    "SEEN_BUCKET_DAYS",
    "active",
    "audit",
    "batch",
    "batch_results",
    "batches",
    "class_index",
    "days",
    "erased",
    "event_hash",
    "history",
    "offsets",
    "outbox",
    "prediction",
    "rate_limit",
    "seen",
    "seen_bucket",
    "seen_keys",
    "state",
    "student_keys",
    "student_prefix",
    "tenant_index",
    "tenant_keys",
    "tenant_prefix",
    "tenant_sum",
    "xapi",
]

#: One day record: a mask of the components that had events that day (bit i: the i-th
#: ``Component``) and the day number since the decay origin, then for each of them
#: ``DAY_COMPONENT``: the number of events and the sum of their scores in units of 1/10000
#: (``mastery.domain.days``), then the mask again (``DAY_TRAILER``: apply.lua reads the
#: newest record from the end). 4 bytes a day plus 6 per component with events.
DAY_HEADER = struct.Struct("<BH")
DAY_COMPONENT = struct.Struct("<HI")
DAY_TRAILER = struct.Struct("<B")
SEEN_BUCKET_DAYS = 30
#: The longest window ``MASTERY_RETENTION_DAYS`` allows: seen buckets written under it
#: outlive a window shortened since, and an erasure or an export must still find them.
SEEN_HORIZON_DAYS = 365
#: An applied xAPI statement's entry in the student's ``xapi`` hash (apply.lua): ``c``,
#: then its component's index (1-based, ``Component`` order), day number, score units,
#: weight and weight x score, then ``XAPI_DIGEST`` bytes (what it says:
#: ``mastery.events.comparison``), then its area; ``a`` is one written before digests
#: were kept (no digest: not compared). A voided one's: ``v``, then ``XAPI_VOIDED`` (the
#: day), then its digest when it was kept. Field ``_p`` is the day the hash was last pruned.
XAPI_APPLIED = struct.Struct("<BHIdd")
XAPI_VOIDED = struct.Struct("<H")
XAPI_DIGEST = 8
#: The cohort metrics, in the order cohort.lua's METRICS lists them.
METRICS = ("mastery", "completion", "quiz", "quality", "consistency")


def student_prefix(tenant: str, student: str) -> str:
    return f"m:{{{tenant}}}:s:{student}:"


def state(tenant: str, student: str) -> str:
    return f"m:{{{tenant}}}:s:{student}:state"


def days(tenant: str, student: str) -> str:
    return f"m:{{{tenant}}}:s:{student}:days"


def prediction(tenant: str, student: str) -> str:
    return f"m:{{{tenant}}}:s:{student}:prediction"


def history(tenant: str, student: str) -> str:
    return f"m:{{{tenant}}}:s:{student}:history"


def xapi(tenant: str, student: str) -> str:
    return f"m:{{{tenant}}}:s:{student}:xapi"


def seen(tenant: str, student: str, bucket: int) -> str:
    return f"m:{{{tenant}}}:s:{student}:seen:{bucket}"


def student_keys(tenant: str, student: str, now_s: float) -> list[str]:
    """Every key that can hold the student's data at ``now_s`` (erasure deletes these)."""
    return [
        state(tenant, student),
        days(tenant, student),
        prediction(tenant, student),
        history(tenant, student),
        xapi(tenant, student),
        rate_limit(tenant, "student", student),  # its id in the name: gone too (a minute)
        *seen_keys(tenant, student, now_s),
    ]


def seen_keys(tenant: str, student: str, now_s: float) -> list[str]:
    """The student's seen-id buckets that can exist at ``now_s``, under any window."""
    oldest = seen_bucket(int(now_s // 86400) - SEEN_HORIZON_DAYS) - 1  # they outlive their days
    newest = seen_bucket(int(now_s // 86400) + 1)  # events may be minutes in the future
    return [seen(tenant, student, b) for b in range(oldest, newest + 1)]


def tenant_prefix(tenant: str) -> str:
    return f"m:{{{tenant}}}:"


def audit(tenant: str) -> str:
    return f"m:{{{tenant}}}:audit"


def outbox(tenant: str) -> str:
    return f"m:{{{tenant}}}:outbox"


def offsets(tenant: str, group: str) -> str:
    return f"m:{{{tenant}}}:offsets:{group}"


def tenant_keys(tenant: str) -> list[str]:
    """The tenant-wide keys a script may touch, in the order cohort.lua reads them (TK)."""
    return [
        audit(tenant),
        outbox(tenant),
        erased(tenant),
        active(tenant),
        f"m:{{{tenant}}}:cohort:classes",
        tenant_sum(tenant),
        *(tenant_index(tenant, m) for m in METRICS),
    ]


def batches(tenant: str) -> str:
    return f"m:{{{tenant}}}:batches"


def batch(tenant: str, batch_id: str) -> str:
    return f"m:{{{tenant}}}:batch:{batch_id}"


def batch_results(tenant: str, batch_id: str) -> str:
    return f"m:{{{tenant}}}:batch:{batch_id}:results"


def erased(tenant: str) -> str:
    return f"m:{{{tenant}}}:erased"


def active(tenant: str) -> str:
    return f"m:{{{tenant}}}:active"


def tenant_index(tenant: str, metric: str) -> str:
    return f"m:{{{tenant}}}:cohort:t:{metric}"


def tenant_sum(tenant: str) -> str:
    return f"m:{{{tenant}}}:cohort:t:sum"


def class_index(tenant: str, class_id: str) -> str:
    return f"m:{{{tenant}}}:cohort:c:{class_id}"


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

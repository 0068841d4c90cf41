"""Decoding what the store keeps in Redis: states, score rows, day records, audit entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import orjson

from mastery.domain import Aggregate, Component, DayActivity, DayMean, StudentState
from mastery.domain.days import UNITS
from mastery.domain.scoring import DECAY_ORIGIN, day_number
from mastery.store import keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "SCORE_FIELDS",
    "StatementRecord",
    "about",
    "as_bytes",
    "class_days",
    "dated_after",
    "held_digest",
    "held_state",
    "parse_days",
    "parse_scores",
    "parse_state",
    "parse_statements",
]

_COMPONENTS = tuple(Component)
#: The state fields scoring reads, in the order ``parse_scores`` expects them.
SCORE_FIELDS = (
    *(f"{c.value}:{part}" for c in _COMPONENTS for part in ("s", "w", "n")),
    "classes",
    "last_at",
    "updated_at",
    "version",
)


def as_bytes(value: bytes | str | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def class_days(text: str, last_at: float | None = None) -> dict[str, int]:
    """A state's ``classes`` field, ``<class>:<day>,...`` (``apply.lua``): class -> the
    last day an event carried it. An entry without a day (written before days were kept)
    counts as of the student's last event, ``last_at``."""
    default = day_number(last_at) if last_at is not None else 0
    out: dict[str, int] = {}
    for entry in filter(None, text.split(",")):
        name, _, day = entry.partition(":")
        out[name] = int(day) if day else default
    return out


def dated_after(record: str, at: datetime) -> bool:
    """Whether an audit record (JSON) is of an event dated after ``at``: of a student's
    data applied since an erasure at ``at`` (apply.lua refuses older ones as ``erased``)."""
    occurred = orjson.loads(record).get("occurred_at")
    return isinstance(occurred, str) and datetime.fromisoformat(occurred) > at


def about(record: str, student: str) -> bool:
    """Whether an audit record (JSON) is about ``student``; cheap test before parsing."""
    if student not in record:
        return False
    try:
        return bool(orjson.loads(record).get("student_id") == student)
    except orjson.JSONDecodeError:
        return False


def held_state(raw: Mapping[bytes | str, bytes | str]) -> StudentState | None:
    """A state hash as HGETALL answers it: ``None`` when no state is held."""
    return parse_state(raw) if raw else None


def parse_state(raw: Mapping[bytes | str, bytes | str]) -> StudentState:
    fields = {as_bytes(k).decode(): as_bytes(v).decode() for k, v in raw.items()}

    def aggregate(prefix: str) -> Aggregate:
        return Aggregate(
            float(fields.get(f"{prefix}:s", 0)),
            float(fields.get(f"{prefix}:w", 0)),
            int(fields.get(f"{prefix}:n", 0)),
        )

    components = {c: aggregate(c.value) for c in _COMPONENTS if f"{c.value}:n" in fields}
    areas: dict[tuple[Component, str], Aggregate] = {}
    for name in fields:
        if name.startswith("a:") and name.endswith(":n"):
            _, comp, area, _ = name.split(":")
            areas[(Component(comp), area)] = aggregate(name[:-2])
    last_at = float(fields["last_at"]) if "last_at" in fields else None
    return StudentState(
        components=components,
        areas=areas,
        class_days=class_days(fields.get("classes", ""), last_at),
        last_event_at=last_at,
        updated_at=int(fields["updated_at"]) / 1000 if "updated_at" in fields else None,
        version=int(fields.get("version", 0)),
    )


def parse_scores(row: Sequence[bytes | None]) -> StudentState | None:
    """A state from ``SCORE_FIELDS`` values; every stored state has a ``version``."""
    *sums, classes, last, updated, version = row
    if version is None:
        return None
    components = {
        c: Aggregate(float(sums[3 * i] or 0), float(sums[3 * i + 1] or 0), int(n))
        for i, c in enumerate(_COMPONENTS)
        if (n := sums[3 * i + 2]) is not None
    }
    last_at = float(last) if last is not None else None
    return StudentState(
        components=components,
        class_days=class_days(as_bytes(classes).decode(), last_at),
        last_event_at=last_at,
        updated_at=int(updated) / 1000 if updated is not None else None,
        version=int(version),
    )


def parse_days(blob: bytes) -> list[DayActivity]:
    """The day records apply.lua writes (``keys.DAY_HEADER``), oldest day first."""
    origin = DECAY_ORIGIN.date()
    out = []
    pos, header, part = 0, keys.DAY_HEADER, keys.DAY_COMPONENT
    while pos < len(blob):
        mask, day = header.unpack_from(blob, pos)
        pos += header.size
        events = {}
        for i, c in enumerate(_COMPONENTS):
            if mask >> i & 1:
                events[c] = DayMean(*part.unpack_from(blob, pos))
                pos += part.size
        pos += keys.DAY_TRAILER.size  # the mask again, for apply.lua
        out.append(DayActivity(origin + timedelta(days=day), events))
    return out


@dataclass(frozen=True, slots=True)
class StatementRecord:
    """What the store keeps of one xAPI statement, so that a voiding can undo it: what it
    added (component, score, area), or that it was voided (``voided``; then the day only)."""

    statement_hash: int  # keys.event_hash of the statement id
    day: date
    voided: bool
    component: Component | None = None
    score: float | None = None
    area: str | None = None


def held_digest(entry: bytes | None) -> bytes | None:
    """The digest of what a ``xapi`` hash entry's statement said (``keys.XAPI_APPLIED``);
    ``None`` when none is kept: no entry, one written before digests were, a tombstone."""
    if not entry:
        return None
    if entry[:1] == b"c":
        start = 1 + keys.XAPI_APPLIED.size
        return entry[start : start + keys.XAPI_DIGEST]
    if entry[:1] == b"v" and len(entry) == 1 + keys.XAPI_VOIDED.size + keys.XAPI_DIGEST:
        return entry[1 + keys.XAPI_VOIDED.size :]
    return None


def parse_statements(raw: dict[bytes, bytes]) -> list[StatementRecord]:
    """The entries of a student's ``xapi`` hash (``keys.XAPI_APPLIED``), oldest day first."""
    origin = DECAY_ORIGIN.date()
    out = []
    for field, value in raw.items():
        if field == b"_p":
            continue
        if value[:1] == b"v":
            (day,) = keys.XAPI_VOIDED.unpack_from(value, 1)
            out.append(StatementRecord(int(field), origin + timedelta(days=day), voided=True))
            continue
        j, day, units, _, _ = keys.XAPI_APPLIED.unpack_from(value, 1)
        kept = keys.XAPI_DIGEST if value[:1] == b"c" else 0  # "a": written without one
        area = value[1 + keys.XAPI_APPLIED.size + kept :].decode()
        out.append(
            StatementRecord(
                int(field),
                origin + timedelta(days=day),
                voided=False,
                component=_COMPONENTS[j - 1],
                score=units / UNITS,
                area=area or None,
            )
        )
    return sorted(out, key=lambda r: (r.day, r.statement_hash))

"""The Redis layout without Redis: key names, event-id hashes and the stored-state parsers.

Key names and hashes are persistent formats: changing one orphans stored data or lets
redelivered events through as new, so several values here are pinned literally.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mastery.domain import Aggregate, Component, DayActivity, DayMean, StudentState
from mastery.domain.scoring import DECAY_ORIGIN, day_number
from mastery.events.comparison import DIGEST_SIZE
from mastery.fields import ID_PATTERN, is_id, too_deep
from mastery.store import keys
from mastery.store.records import held_digest, parse_statements
from mastery.store.records import parse_days as _parse_days
from mastery.store.records import parse_state as _parse_state

_ids = st.from_regex(ID_PATTERN, fullmatch=True)


def _hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: from the first ``{`` to the next ``}``."""
    start = key.index("{")
    end = key.index("}", start + 1)
    assert end > start + 1, f"empty hash tag in {key!r}"
    return key[start + 1 : end]


def _student_keys(tenant: str, student: str) -> list[str]:
    return [
        keys.state(tenant, student),
        keys.days(tenant, student),
        keys.seen(tenant, student, 0),
        keys.seen(tenant, student, 678),
    ]


# -- key names -------------------------------------------------------------------------------


def test_key_names() -> None:
    assert keys.student_prefix("t1", "s1") == "m:{t1}:s:s1:"
    assert keys.state("t1", "s1") == "m:{t1}:s:s1:state"
    assert keys.days("t1", "s1") == "m:{t1}:s:s1:days"
    assert keys.seen("t1", "s1", 678) == "m:{t1}:s:s1:seen:678"
    assert keys.audit("t1") == "m:{t1}:audit"
    assert keys.outbox("t1") == "m:{t1}:outbox"
    assert keys.offsets("t1", "g") == "m:{t1}:offsets:g"


@given(_ids)
def test_an_id_is_whole_or_none(value: str) -> None:
    """Ids become key names: every checker refuses what pydantic's pattern refuses,
    a trailing newline included (Python's ``$`` alone would take it)."""
    assert is_id(value)
    for bad in (value + "\n", value + " ", "{" + value, value + ":x", "", None, 7):
        assert not is_id(bad)


@given(
    st.recursive(
        st.integers() | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)
    )
)
def test_json_depth_is_counted_in_arrays_and_objects(value: Any) -> None:
    def depth(v: Any) -> int:
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        return 0 if children is None else 1 + max(map(depth, children), default=0)

    for limit in range(1, 6):
        assert too_deep(value, limit) == (depth(value) > limit)


@settings(max_examples=200, deadline=None)
@given(tenant=_ids, student=_ids)
def test_every_key_of_a_tenant_shares_its_hash_tag(tenant: str, student: str) -> None:
    """The tenant is the shard unit: one script call never spans two cluster slots."""
    prefix = keys.student_prefix(tenant, student)
    for key in _student_keys(tenant, student):
        assert _hash_tag(key) == tenant
        assert key.startswith(prefix)
    tenant_wide = [
        *keys.tenant_keys(tenant),
        keys.offsets(tenant, "g"),
        keys.class_index(tenant, "c1"),
        keys.batch_results(tenant, "b1"),
        keys.rate_limit(tenant, "student", student),
    ]
    for key in tenant_wide:
        assert _hash_tag(key) == tenant
        assert key.startswith(keys.tenant_prefix(tenant))


@settings(max_examples=200, deadline=None)
@given(a=st.tuples(_ids, _ids), b=st.tuples(_ids, _ids))
def test_different_students_never_share_keys(a: tuple[str, str], b: tuple[str, str]) -> None:
    if a == b:
        assert keys.state(*a) == keys.state(*b)
    else:
        assert not set(_student_keys(*a)) & set(_student_keys(*b))


@settings(max_examples=200, deadline=None)
@given(tenant=_ids, other=_ids, student=_ids)
def test_audit_key_is_per_tenant(tenant: str, other: str, student: str) -> None:
    assert keys.audit(tenant) not in _student_keys(tenant, student)
    assert (keys.audit(tenant) == keys.audit(other)) == (tenant == other)


# -- dedup buckets and event hashes ----------------------------------------------------------


def _epoch_day(at: datetime) -> int:
    return int(at.timestamp() // 86400)


def test_seen_bucket_boundaries() -> None:
    assert keys.SEEN_BUCKET_DAYS == 30
    assert [keys.seen_bucket(d) for d in (0, 29, 30, 59, 60, 20_129, 20_130)] == [
        0,
        0,
        1,
        1,
        2,
        670,
        671,
    ]


@settings(max_examples=200, deadline=None)
@given(
    day=st.dates(min_value=date(2020, 1, 1), max_value=date(2100, 1, 1)),
    first=st.times(),
    second=st.times(),
)
def test_seen_bucket_is_stable_within_an_event_day(day: date, first: time, second: time) -> None:
    a = datetime.combine(day, first, tzinfo=UTC)
    b = datetime.combine(day, second, tzinfo=UTC)
    assert keys.seen_bucket(_epoch_day(a)) == keys.seen_bucket(_epoch_day(b))


@settings(max_examples=200, deadline=None)
@given(day=st.integers(min_value=0, max_value=60_000))
def test_seen_bucket_spans_thirty_days(day: int) -> None:
    bucket = keys.seen_bucket(day)
    first = bucket * keys.SEEN_BUCKET_DAYS
    assert first <= day < first + keys.SEEN_BUCKET_DAYS
    assert keys.seen_bucket(first) == keys.seen_bucket(first + keys.SEEN_BUCKET_DAYS - 1) == bucket
    assert keys.seen_bucket(first + keys.SEEN_BUCKET_DAYS) == bucket + 1


@pytest.mark.parametrize(
    ("event_id", "expected"),
    [
        ("e1", 1971835917959106308),
        ("3f2a9c1e-1b7d-4c55-9e0f-8a6b2d4c1e7f", -613937458307199097),
        ("", -1970711489451281740),
    ],
)
def test_event_hash_is_pinned(event_id: str, expected: int) -> None:
    assert keys.event_hash(event_id) == expected


@settings(max_examples=200, deadline=None)
@given(event_id=st.text(max_size=128))
def test_event_hash_is_deterministic_signed_64_bit(event_id: str) -> None:
    digest = keys.event_hash(event_id)
    assert digest == keys.event_hash(event_id)
    assert -(2**63) <= digest < 2**63


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.text(max_size=128), min_size=2, max_size=2, unique=True))
def test_event_hash_differs_for_different_ids(ids: list[str]) -> None:
    first, second = ids
    assert keys.event_hash(first) != keys.event_hash(second)


def test_event_hash_of_many_ids_has_no_collision() -> None:
    ids = [f"evt-{i}" for i in range(20_000)]
    assert len({keys.event_hash(i) for i in ids}) == len(ids)


# -- day records -----------------------------------------------------------------------------


def _record(day: int, events: dict[Component, tuple[int, int]]) -> bytes:
    mask = sum(1 << i for i, c in enumerate(Component) if c in events)
    body = b"".join(keys.DAY_COMPONENT.pack(*events[c]) for c in Component if c in events)
    return keys.DAY_HEADER.pack(mask, day) + body + keys.DAY_TRAILER.pack(mask)


def test_parse_days() -> None:
    blob = _record(0, {Component.COMPLETION: (2, 15000), Component.QUALITY: (1, 5000)})
    blob += _record(500, {Component.CONSISTENCY: (3, 0)})
    assert keys.DAY_HEADER.size + keys.DAY_TRAILER.size == 4
    assert keys.DAY_COMPONENT.size == 6
    assert len(blob) == 4 + 12 + 4 + 6
    assert _parse_days(blob) == [
        DayActivity(
            day=date(2024, 1, 1),
            events={Component.COMPLETION: DayMean(2, 15000), Component.QUALITY: DayMean(1, 5000)},
        ),
        DayActivity(day=date(2025, 5, 15), events={Component.CONSISTENCY: DayMean(3, 0)}),
    ]
    assert _parse_days(blob)[0].events[Component.COMPLETION].mean == 0.75


def test_parse_days_counts_from_the_decay_origin() -> None:
    (record,) = _parse_days(_record(517, {Component.QUIZ: (1, 1)}))
    assert record.day == DECAY_ORIGIN.date() + timedelta(days=517)


def test_parse_days_empty() -> None:
    assert _parse_days(b"") == []


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.integers(0, 65535),
            st.dictionaries(
                st.sampled_from(list(Component)),
                st.tuples(st.integers(1, 65535), st.integers(0, 2**32 - 1)),
                min_size=1,
            ),
        ),
        max_size=20,
    )
)
def test_parse_days_property(records: list[tuple[int, dict[Component, tuple[int, int]]]]) -> None:
    parsed = _parse_days(b"".join(_record(day, events) for day, events in records))
    assert len(parsed) == len(records)
    for record, (day, events) in zip(parsed, records, strict=True):
        assert record.day == DECAY_ORIGIN.date() + timedelta(days=day)
        assert record.events == {c: DayMean(*v) for c, v in events.items()}


# -- student state ---------------------------------------------------------------------------


_RAW_STATE: dict[bytes | str, bytes | str] = {
    b"quiz:s": b"1.6",
    b"quiz:w": b"2",
    b"quiz:n": b"2",
    b"a:quiz:algebra:s": b"0.9",
    b"a:quiz:algebra:w": b"1",
    b"a:quiz:algebra:n": b"1",
    b"completion:s": b"3.5",
    b"completion:w": b"4.0",
    b"completion:n": b"5",
    b"a:completion:advanced_topics:s": b"0.25",
    b"a:completion:advanced_topics:w": b"0.5",
    b"a:completion:advanced_topics:n": b"2",
    b"classes": b"c1,c2",
    b"version": b"3",
    b"last_at": b"1700000000.5",
    b"updated_at": b"1700000001000",
}

_EXPECTED_STATE = StudentState(
    components={
        Component.QUIZ: Aggregate(1.6, 2.0, 2),
        Component.COMPLETION: Aggregate(3.5, 4.0, 5),
    },
    areas={
        (Component.QUIZ, "algebra"): Aggregate(0.9, 1.0, 1),
        (Component.COMPLETION, "advanced_topics"): Aggregate(0.25, 0.5, 2),
    },
    # Written before class days were kept: as of the student's last event.
    class_days={"c1": day_number(1700000000.5), "c2": day_number(1700000000.5)},
    last_event_at=1700000000.5,
    updated_at=1700000001.0,
    version=3,
)


def test_parse_state() -> None:
    state = _parse_state(_RAW_STATE)
    assert state == _EXPECTED_STATE
    assert state.component(Component.QUIZ).mean == pytest.approx(0.8)
    assert not state.component(Component.QUALITY).observed
    assert state.events == 7


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_parse_state_from_decoded_strings() -> None:
    raw: dict[bytes | str, bytes | str] = {_text(k): _text(v) for k, v in _RAW_STATE.items()}
    assert _parse_state(raw) == _EXPECTED_STATE


def test_parse_state_minimal() -> None:
    raw: dict[bytes | str, bytes | str] = {
        b"consistency:s": b"0",
        b"consistency:w": b"0.5",
        b"consistency:n": b"1",
    }
    state = _parse_state(raw)
    assert state == StudentState(components={Component.CONSISTENCY: Aggregate(0.0, 0.5, 1)})
    assert state.classes == frozenset()
    assert (state.last_event_at, state.updated_at, state.version) == (None, None, 0)


def test_parse_state_reads_each_class_with_its_last_day() -> None:
    raw: dict[bytes | str, bytes | str] = {
        b"classes": b"7b-2026:1050,a@b.c:1032,old",
        b"version": b"1",
        b"last_at": b"1700000000.5",
    }
    state = _parse_state(raw)
    assert state.class_days == {"7b-2026": 1050, "a@b.c": 1032, "old": day_number(1700000000.5)}
    assert state.classes == {"7b-2026", "a@b.c", "old"}


def test_parse_state_empty_classes() -> None:
    raw: dict[bytes | str, bytes | str] = {b"classes": b"", b"version": b"1"}
    state = _parse_state(raw)
    assert state.classes == frozenset()
    assert state.components == {}
    assert state.version == 1


def test_parse_state_reads_lua_float_formats() -> None:
    # HINCRBYFLOAT answers in its own float format; the Lua writes last_at with %.6f.
    raw: dict[bytes | str, bytes | str] = {
        b"quality:s": b"1.5e+10",
        b"quality:w": b"30000000000",
        b"quality:n": b"40",
        b"last_at": b"1740823200.000000",
    }
    state = _parse_state(raw)
    assert state.component(Component.QUALITY) == Aggregate(1.5e10, 3e10, 40)
    assert state.component(Component.QUALITY).mean == pytest.approx(0.5)
    assert state.last_event_at == 1740823200.0


# -- xAPI statement entries ------------------------------------------------------------------


def test_statement_entries_with_and_without_the_digest_of_what_they_said() -> None:
    """``a`` entries (written before digests were kept) still parse, and compare with
    nothing; ``c`` ones keep 8 bytes of digest before the area; a voided one keeps it."""
    said = bytes(range(1, 9))
    added = keys.XAPI_APPLIED.pack(2, 517, 8000, 0.5, 0.4)
    voided_day = keys.XAPI_VOIDED.pack(517)
    entries = {
        b"1": b"a" + added + b"algebra",
        b"2": b"c" + added + said + b"algebra",
        b"3": b"c" + added + said,
        b"4": b"v" + voided_day,
        b"5": b"v" + voided_day + said,
    }
    parsed = {r.statement_hash: r for r in parse_statements(entries)}
    assert [parsed[i].area for i in (1, 2, 3)] == ["algebra", "algebra", None]
    assert {parsed[i].component for i in (1, 2, 3)} == {Component.QUIZ}
    assert {parsed[i].score for i in (1, 2, 3)} == {0.8}
    assert parsed[4].voided
    assert parsed[5].voided
    assert parsed[5].day == DECAY_ORIGIN.date() + timedelta(days=517)
    assert [held_digest(entries[k]) for k in sorted(entries)] == [None, said, said, None, said]
    assert held_digest(None) is None
    assert keys.XAPI_DIGEST == DIGEST_SIZE  # the store keeps what the codec makes

"""xAPI statements decoded at the codec: the mapping table, the refusals, real shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from mastery.domain import Component
from mastery.errors import IgnoredEvent, InvalidEvent
from mastery.events.codec import decode
from mastery.events.comparison import DIGEST_SIZE, digest
from mastery.events.xapi import AREA, CONSISTENCY, QUALITY, parse_statement, statement_id
from mastery.ports import Record
from mastery.topics import XAPI_TOPIC
from tests.helpers import xapi_statement, xapi_voiding

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xapi"
TENANTS = {
    "https://moodle.school-a.example": "school-a",
    "https://courses.school-b.example": "school-b",
    "https://lms.example": "lms",
}


def _record(statement: dict[str, Any]) -> Record:
    return Record(
        XAPI_TOPIC, orjson.dumps(statement), headers={"content-type": b"application/json"}
    )


def _decode(statement: dict[str, Any], tenant: str | None = None) -> Any:
    return decode(_record(statement), NOW, tenant=tenant, xapi_tenants=TENANTS)


def _fixture(name: str) -> dict[str, Any]:
    text = (
        (FIXTURES / name).read_text().replace("TIMESTAMP", (NOW - timedelta(hours=1)).isoformat())
    )
    doc: dict[str, Any] = orjson.loads(text)
    return doc


@pytest.mark.parametrize(
    ("verb", "component", "score"),
    [
        ("completed", Component.COMPLETION, 0.8),
        ("passed", Component.QUIZ, 0.8),
        ("failed", Component.QUIZ, 0.8),
        ("scored", Component.QUIZ, 0.8),
        ("answered", Component.QUIZ, 0.8),
    ],
)
def test_verbs_feed_their_component(verb: str, component: Component, score: float) -> None:
    obs = _decode(xapi_statement("s1", verb, at=NOW, class_id="c1"))
    assert (obs.component, obs.score, obs.tenant, obs.student_id) == (component, score, "lms", "s1")
    assert obs.class_id == "c1"
    assert obs.occurred_at == NOW


def test_completed_without_a_score_is_complete() -> None:
    assert _decode(xapi_statement("s1", "completed", scaled=None, at=NOW)).score == 1.0


def test_raw_over_max_and_negative_scaled() -> None:
    st = xapi_statement("s1", "scored", scaled=None, at=NOW)
    st["result"] = {"score": {"raw": 3, "min": 1, "max": 5}}
    assert _decode(st).score == 0.5
    st["result"] = {"score": {"scaled": -0.5}}
    assert _decode(st).score == 0.0


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ({"raw": 1e308, "min": -1e308, "max": 1e308}, 1.0),  # the difference overflows
        ({"raw": 0, "min": -1e308, "max": 1e308}, 0.5),
        ({"raw": 2**63 - 1, "max": 1.8e19}, 0.5124),
    ],
)
def test_raw_scores_at_the_ends_of_the_numbers(score: dict[str, Any], expected: float) -> None:
    st = xapi_statement("s1", "scored", scaled=None, at=NOW)
    st["result"] = {"score": score}
    assert _decode(st).score == pytest.approx(expected, abs=1e-4)


def test_quality_and_consistency_extensions_whatever_the_verb() -> None:
    st = xapi_statement("s1", "experienced", scaled=None, at=NOW)
    st["result"] = {"extensions": {QUALITY: 0.7}}
    assert (_decode(st).component, _decode(st).score) == (Component.QUALITY, 0.7)
    st["result"] = {"extensions": {CONSISTENCY: 1}}
    assert _decode(st).component is Component.CONSISTENCY
    st["result"] = {"extensions": {QUALITY: 1.5}}
    with pytest.raises(InvalidEvent, match="quality"):
        _decode(st)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update(verb={"id": "http://adlnet.gov/expapi/verbs/experienced"}),
        lambda s: s.pop("result"),  # a quiz verb without a score
        lambda s: s.update(actor={"mbox": "mailto:s1@lms.example"}),
        lambda s: s.update(timestamp="2020-01-01T00:00:00+00:00"),  # outside the window
    ],
)
def test_statements_that_feed_nothing_are_ignored(change: Any) -> None:
    st = xapi_statement("s1", "scored", at=NOW)
    change(st)
    with pytest.raises(IgnoredEvent):
        _decode(st)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: s.pop("verb"), "verb"),
        (lambda s: s.update(surprise=1), "surprise"),
        (lambda s: s.update(id="not-a-uuid"), "id"),
        (lambda s: s.update(result={"score": {"raw": 11, "max": 10}}), "raw"),
        (lambda s: s["actor"]["account"].update(homePage="https://unknown.example"), "tenant"),
        (lambda s: s["actor"]["account"].update(name="a b"), "account.name"),
        # Python's $ takes one trailing newline: a key no export or erasure could name.
        (lambda s: s["actor"]["account"].update(name="zed\n"), "account.name"),
        (lambda s: s.update(timestamp="2026-11-29"), "timestamp"),  # a date, no time
        (lambda s: s.update(timestamp="2026-11-29 x"), "timestamp"),
        (lambda s: s.update(timestamp="2026-11-31T12:00:00Z"), "timestamp"),
        (lambda s: s.update(timestamp=1764417600), "timestamp"),
        (lambda s: s.update(stored="1764417600"), "stored"),
    ],
)
def test_malformed_statements_are_refused_with_a_reason(change: Any, reason: str) -> None:
    st = xapi_statement("s1", "scored", at=NOW)
    change(st)
    with pytest.raises(InvalidEvent, match=reason):
        _decode(st)


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("2026-11-29T10:30:00", datetime(2026, 11, 29, 10, 30, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-29T10:30:00.250", datetime(2026, 11, 29, 10, 30, 0, 250000, tzinfo=UTC)),
        ("2026-11-29T11:30:00+0100", datetime(2026, 11, 29, 10, 30, tzinfo=UTC)),
        ("2026-11-29T10:30:00+0000", datetime(2026, 11, 29, 10, 30, tzinfo=UTC)),
        ("2026-11-29T10:30:00Z", datetime(2026, 11, 29, 10, 30, tzinfo=UTC)),
    ],
)
def test_iso_8601_timestamps_without_an_rfc_3339_offset_are_taken(
    text: str, read: datetime
) -> None:
    """xAPI only recommends an offset (Data 4.5); LMSs send none, or ``+0000``."""
    st = xapi_statement("s1", "scored", at=NOW)
    st["timestamp"] = text
    assert _decode(st).occurred_at == read
    st.pop("timestamp")
    st["stored"] = text
    assert _decode(st).occurred_at == read


def test_a_voiding_statement_names_the_statement_it_voids() -> None:
    target = xapi_statement("s1", "scored", at=NOW)
    voiding = xapi_voiding("s1", target["id"].upper(), at=NOW)
    obs = _decode(voiding)
    assert obs.voids == target["id"]  # as the voided statement's event id is written
    assert not obs.voidable
    assert obs.event_id == voiding["id"]
    assert (obs.student_id, obs.tenant, obs.class_id, obs.area) == ("s1", "lms", None, None)
    applied = _decode(target)
    assert applied.voidable
    assert applied.voids is None


def test_a_voiding_statement_must_name_a_statement() -> None:
    voiding = xapi_statement("s1", "voided", scaled=None, at=NOW)  # its object an Activity
    with pytest.raises(InvalidEvent, match="StatementRef"):
        _decode(voiding)


def test_the_statement_id_is_the_event_id_whatever_the_record_says() -> None:
    st = xapi_statement("s1", "scored", at=NOW)
    record = Record(
        XAPI_TOPIC,
        orjson.dumps(st),
        headers={"content-type": b"application/json", "ce_id": b"something-else"},
    )
    assert decode(record, NOW, xapi_tenants=TENANTS).event_id == st["id"]


@pytest.mark.parametrize(
    ("header", "tenant", "expected"),
    [
        (None, None, "lms"),  # the homePage mapping
        (b"from-header", None, "from-header"),  # the header before the mapping
        (b"from-header", "from-token", "from-token"),  # HTTP: the token's
    ],
)
def test_the_tenant_header_comes_before_the_home_page(
    header: bytes | None, tenant: str | None, expected: str
) -> None:
    st = xapi_statement("s1", "scored", at=NOW)
    headers = {"content-type": b"application/json"}
    if header is not None:
        headers["mastery_tenant"] = header
    record = Record(XAPI_TOPIC, orjson.dumps(st), headers=headers)
    assert decode(record, NOW, tenant=tenant, xapi_tenants=TENANTS).tenant == expected


def test_a_tenant_header_that_is_no_tenant_id_is_refused() -> None:
    st = xapi_statement("s1", "scored", at=NOW)
    headers = {"content-type": b"application/json", "mastery_tenant": b"m:{x}"}
    with pytest.raises(InvalidEvent, match="mastery_tenant"):
        decode(Record(XAPI_TOPIC, orjson.dumps(st), headers=headers), NOW, xapi_tenants=TENANTS)


def test_the_http_tenant_wins_over_the_mapping() -> None:
    st = xapi_statement("s1", "scored", at=NOW, home_page="https://unknown.example")
    assert _decode(st, tenant="from-token").tenant == "from-token"


def test_a_statement_as_moodle_logstore_xapi_sends_it() -> None:
    st = _fixture("moodle_quiz_attempt_submitted.json")
    obs = _decode(st)
    assert (obs.tenant, obs.student_id, obs.component, obs.score) == (
        "school-a",
        "42",
        Component.COMPLETION,
        0.8,
    )
    assert obs.class_id == "3"  # the course: .../course/view.php?id=3
    assert obs.event_id == statement_id(st)  # no id sent: derived, stable for a resend
    assert statement_id(st) == statement_id(orjson.loads(orjson.dumps(st)))


def test_a_statement_as_open_edx_sends_it_through_ralph() -> None:
    st = _fixture("openedx_problem_check.json")
    obs = _decode(st)
    assert (obs.tenant, obs.student_id, obs.component, obs.score) == (
        "school-b",
        "s-edx-7",
        Component.QUIZ,
        0.75,
    )
    assert obs.event_id == st["id"]
    assert obs.class_id == st["context"]["registration"]


# Statement comparison (xAPI 1.0.3, Data 2.3.1) -------------------------------------------


def _digest(statement: dict[str, Any]) -> bytes:
    return digest(parse_statement(statement))


def _sent_again(st: dict[str, Any]) -> dict[str, Any]:
    """``st`` as a second sender, or an LRS that stored it, may spell it."""
    again = orjson.loads(orjson.dumps(st))
    again["id"] = again["id"].upper()
    again["stored"] = "2026-11-29T13:00:00Z"  # assigned by whoever took it
    again["timestamp"] = "2026-11-29T13:00:00.000+01:00"
    again["version"] = "1.0.0"
    again["authority"] = {"mbox": "mailto:lrs@example.org"}
    again["verb"]["display"] = {"en-US": "passed"}
    again["object"]["definition"] = {"name": {"en": "Quiz 1"}}
    again["object"]["objectType"] = "Activity"
    again["actor"]["objectType"] = "Agent"
    [grouping] = again["context"]["contextActivities"]["grouping"]
    again["context"]["contextActivities"]["grouping"] = grouping  # one, not a list of one
    again["result"]["score"]["raw"] = 8.0  # the number 8
    again["result"]["extensions"] = None  # null is absent
    return again


def test_a_statement_sent_again_in_another_spelling_compares_equal() -> None:
    st = xapi_statement("s1", "passed", at=NOW)
    st["result"]["score"] = {"raw": 8, "max": 10}
    assert _digest(_sent_again(st)) == _digest(st)
    assert len(_digest(st)) == DIGEST_SIZE
    # The members of a Group in any order, an mbox's domain in any case.
    group = {
        "objectType": "Group",
        "member": [{"mbox": "mailto:ada@Example.org"}, {"mbox_sha1sum": "AB" * 20}],
    }
    other = {**group, "member": [{"mbox_sha1sum": "ab" * 20}, {"mbox": "mailto:ada@example.org"}]}
    assert _digest({**st, "object": group}) == _digest({**st, "object": other})


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["result"]["score"].update(raw=7),
        lambda s: s["verb"].update(id="http://adlnet.gov/expapi/verbs/failed"),
        lambda s: s["object"].update(id="https://lms.example/activity/quiz-2"),
        lambda s: s["actor"]["account"].update(name="s2"),
        lambda s: s["result"].update(success=True),
        lambda s: s["result"].update(duration="PT5M"),
        lambda s: s["context"].update(extensions={AREA: "algebra"}),
        lambda s: s["context"]["contextActivities"]["grouping"][0].update(
            id="https://x.example/c2"
        ),
        lambda s: s["actor"].update(account=None, mbox="mailto:Ada@example.org"),
    ],
)
def test_a_statement_that_says_otherwise_compares_different(change: Any) -> None:
    st = xapi_statement("s1", "passed", at=NOW)
    st["result"]["score"] = {"raw": 8, "max": 10}
    other = orjson.loads(orjson.dumps(st))
    change(other)
    assert _digest(other) != _digest(st)


def test_an_applied_statement_carries_its_digest_and_a_voiding_none() -> None:
    st = xapi_statement("s1", "passed", at=NOW)
    assert _decode(st).digest == _digest(st)
    assert _decode(xapi_voiding("s1", st["id"], at=NOW)).digest is None

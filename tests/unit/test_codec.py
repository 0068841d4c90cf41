"""Learning events on the wire: ``encode`` and ``decode``, and every way a record is refused.

Every refusal is an ``InvalidEvent`` whose reason names the problem, since that reason is
what a producer reads in the dead-letter queue.
"""

from __future__ import annotations

import base64
import io
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mastery.domain import Component, Observation
from mastery.errors import InvalidEvent
from mastery.events.codec import AVRO, JSON, decode, encode
from mastery.events.schemas import parsed_schema
from mastery.fields import ID_PATTERN
from mastery.ports import Record
from mastery.topics import event_topic

_NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_AT = _NOW - timedelta(hours=2)
_STRUCTURED = "application/cloudevents+json"

_EXTRA_FIELDS: dict[Component, dict[str, Any]] = {
    Component.COMPLETION: {"exercise_id": "ex-1"},
    Component.QUIZ: {"quiz_id": "q-1", "correct": 3, "total": 4},
    Component.QUALITY: {"submission_id": "sub-1"},
    Component.CONSISTENCY: {"streak_days": 5},
}


def _data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "student_id": "s1",
        "tenant": "t1",
        "occurred_at": _AT.isoformat(),
        "score": 0.75,
    }
    data |= changes
    return data


def _record(
    component: Component = Component.QUIZ,
    data: dict[str, Any] | None = None,
    *,
    content_type: str = JSON,
    topic: str | None = None,
) -> Record:
    value, headers = encode(
        component,
        _data() if data is None else data,
        event_id="e1",
        content_type=content_type,
    )
    return Record(topic or event_topic(component), value, b"s1", dict(headers))


def _with_value(record: Record, value: bytes) -> Record:
    return Record(record.topic, value, record.key, record.headers)


def _with_headers(record: Record, **changes: bytes | None) -> Record:
    headers = dict(record.headers)
    for name, value in changes.items():
        key = "content-type" if name == "content_type" else name
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return Record(record.topic, record.value, record.key, headers)


def _avro(component: Component, data: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema(component), data)
    return buf.getvalue()


def _reject(record: Record) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode(record, _NOW)
    assert str(caught.value) == caught.value.reason
    return caught.value


def _structured(envelope: dict[str, Any], content_type: str = _STRUCTURED) -> Record:
    return Record(
        "mastery.quiz", orjson.dumps(envelope), None, {"content-type": content_type.encode()}
    )


def _envelope(**changes: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e1",
        "type": "mastery.quiz.v1",
        "source": "urn:test",
        "time": _AT.isoformat(),
        "datacontenttype": JSON,
        "data": _data(),
    }
    envelope |= changes
    return {k: v for k, v in envelope.items() if v is not None}


def _expected(component: Component = Component.QUIZ, **changes: Any) -> Observation:
    fields: dict[str, Any] = {
        "event_id": "e1",
        "tenant": "t1",
        "student_id": "s1",
        "component": component,
        "score": 0.75,
        "occurred_at": _AT,
        "area": None,
        "class_id": None,
    }
    return Observation(**(fields | changes))


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [AVRO, JSON])
@pytest.mark.parametrize("component", list(Component))
def test_round_trip(component: Component, content_type: str) -> None:
    data = _data(class_id="c-7", area="advanced_topics") | _EXTRA_FIELDS[component]
    record = _record(component, data, content_type=content_type)
    assert decode(record, _NOW) == _expected(component, class_id="c-7", area="advanced_topics")


@pytest.mark.parametrize("content_type", [AVRO, JSON])
def test_encode_headers(content_type: str) -> None:
    _, headers = encode(
        Component.QUALITY,
        _data(),
        event_id="e9",
        source="urn:x",
        content_type=content_type,
    )
    assert dict(headers) == {
        "content-type": content_type.encode(),
        "ce_id": b"e9",
        "ce_type": b"mastery.quality.v1",
        "ce_source": b"urn:x",
        "ce_specversion": b"1.0",
        "ce_time": _AT.isoformat().encode(),
    }


def test_encode_avro_body_is_the_schemaless_record() -> None:
    value, _ = encode(Component.QUIZ, _data(), event_id="e1")
    assert value == _avro(Component.QUIZ, _data())


def test_optional_fields_may_be_omitted() -> None:
    for content_type in (AVRO, JSON):
        assert decode(_record(content_type=content_type), _NOW) == _expected()


def test_content_type_defaults_to_json_and_ignores_parameters() -> None:
    record = _record()
    assert decode(_with_headers(record, content_type=None), _NOW) == _expected()
    charset = _with_headers(record, content_type=b"Application/JSON; charset=utf-8")
    assert decode(charset, _NOW) == _expected()


def test_header_names_are_case_insensitive() -> None:
    record = _record()
    upper = {name.upper(): value for name, value in record.headers.items()}
    assert decode(Record(record.topic, record.value, None, upper), _NOW) == _expected()


def test_topic_of_another_name_accepts_any_type() -> None:
    record = _record(Component.QUIZ, topic="learning-events")
    assert decode(record, _NOW).component is Component.QUIZ


@settings(max_examples=200, deadline=None)
@given(
    component=st.sampled_from(Component),
    content_type=st.sampled_from([AVRO, JSON]),
    student=st.from_regex(ID_PATTERN, fullmatch=True),
    tenant=st.from_regex(ID_PATTERN, fullmatch=True),
    score=st.floats(min_value=0.0, max_value=1.0),
    age=st.integers(min_value=-300_000, max_value=90 * 86_400_000),
)
def test_round_trip_property(
    component: Component, content_type: str, student: str, tenant: str, score: float, age: int
) -> None:
    at = _NOW - timedelta(milliseconds=age)
    data = _data(student_id=student, tenant=tenant, score=score, occurred_at=at.isoformat())
    obs = decode(_record(component, data, content_type=content_type), _NOW)
    assert (obs.student_id, obs.tenant, obs.score, obs.occurred_at) == (student, tenant, score, at)
    assert obs.component is component


# -- structured mode -------------------------------------------------------------------------


def test_structured_json_data() -> None:
    assert decode(_structured(_envelope()), _NOW) == _expected()


def test_structured_content_type_parameters() -> None:
    record = _structured(_envelope(), f"{_STRUCTURED}; charset=utf-8")
    assert decode(record, _NOW) == _expected()


def test_structured_without_datacontenttype_is_json() -> None:
    assert decode(_structured(_envelope(datacontenttype=None)), _NOW) == _expected()


def test_structured_base64_avro_data() -> None:
    envelope = _envelope(
        data=None,
        datacontenttype=AVRO,
        data_base64=base64.b64encode(_avro(Component.QUIZ, _data())).decode(),
    )
    assert decode(_structured(envelope), _NOW) == _expected()


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        pytest.param(_envelope(data="text"), "JSON object", id="data-not-object"),
        pytest.param(_envelope(data=None), "JSON object", id="no-data"),
        pytest.param(
            _envelope(data=None, datacontenttype=AVRO, data_base64="!!!"), "base64", id="bad-b64"
        ),
        pytest.param(
            _envelope(datacontenttype=AVRO), "Avro data must be binary", id="avro-as-object"
        ),
        pytest.param(_envelope(id=None), "ce_id", id="no-id"),
        pytest.param(_envelope(specversion="0.3"), "specversion", id="specversion"),
        pytest.param(_envelope(type="mastery.completion.v1"), "topic", id="type-not-topic"),
    ],
)
def test_structured_rejections(envelope: dict[str, Any], reason: str) -> None:
    assert reason in _reject(_structured(envelope)).reason


@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [
        pytest.param("id", None, "ce_id", id="null-id"),
        pytest.param("id", {"n": 1}, "ce_id", id="object-id"),
        pytest.param("source", None, "ce_source", id="null-source"),
    ],
)
def test_structured_attributes_must_be_strings(attribute: str, value: Any, reason: str) -> None:
    # A null id must not become the event id "None": every such event would then be
    # deduplicated against the first one and silently dropped.
    envelope = _envelope() | {attribute: value}
    assert reason in _reject(_structured(envelope)).reason


def test_structured_envelope_must_be_json_object() -> None:
    record = Record("mastery.quiz", b"[]", None, {"content-type": _STRUCTURED.encode()})
    assert "object" in _reject(record).reason


# -- rejections ------------------------------------------------------------------------------


def test_malformed_json() -> None:
    assert "malformed JSON" in _reject(_with_value(_record(), b'{"student_id": ')).reason


def test_json_array() -> None:
    assert "object" in _reject(_with_value(_record(), b"[1, 2]")).reason


@pytest.mark.parametrize("value", [b"", None])
def test_empty_value(value: bytes | None) -> None:
    record = Record("mastery.quiz", value, None, _record().headers)
    assert "empty" in _reject(record).reason


@pytest.mark.parametrize("missing", ["student_id", "tenant", "occurred_at", "score"])
def test_missing_field(missing: str) -> None:
    data = _data()
    del data[missing]
    reason = _reject(_with_value(_record(), orjson.dumps(data))).reason
    assert missing in reason
    others = {"student_id", "tenant", "occurred_at", "score"} - {missing}
    assert not any(other in reason for other in others)


@pytest.mark.parametrize("score", [1.5, -0.1, 1.0000001, -1e-12])
@pytest.mark.parametrize("content_type", [AVRO, JSON])
def test_score_out_of_range(score: float, content_type: str) -> None:
    record = _record(data=_data(score=score), content_type=content_type)
    assert "score" in _reject(record).reason


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf])
def test_non_finite_score_in_avro(score: float) -> None:
    record = _record(data=_data(score=score), content_type=AVRO)
    assert "score" in _reject(record).reason


def test_nan_score_in_json() -> None:
    # JSON has no NaN; a producer writing the bare token sends malformed JSON.
    body = orjson.dumps(_data(score=0.125)).replace(b"0.125", b"NaN")
    assert "malformed JSON" in _reject(_with_value(_record(), body)).reason


@pytest.mark.parametrize("score", ["0.5", True, None])
def test_score_of_wrong_type(score: Any) -> None:
    record = _with_value(_record(), orjson.dumps(_data(score=score)))
    assert "score" in _reject(record).reason


def test_a_field_of_the_wrong_type_is_named_without_its_value() -> None:
    """The reason goes to the DLQ header, the audit and the log, where a value that may
    be personal data (an e-mail address where an id was expected) has no place."""
    nested = _data(class_id={"email": "ann@example.org"})
    reason = _reject(_with_value(_record(), orjson.dumps(nested))).reason
    assert "QuizEvent.class_id is dict, expected string" in reason
    assert "ann@example.org" not in reason
    text = _reject(_with_value(_record(), orjson.dumps(_data(score="high")))).reason
    assert text.endswith("QuizEvent.score is str, expected double")
    assert "high" not in text


def test_unknown_event_type() -> None:
    record = _with_headers(_record(), ce_type=b"mastery.attendance.v1")
    assert "unknown event type 'mastery.attendance.v1'" in _reject(record).reason


def test_event_type_must_match_topic() -> None:
    reason = _reject(_record(Component.QUIZ, topic="mastery.completion")).reason
    assert "mastery.quiz.v1" in reason
    assert "mastery.completion" in reason


@pytest.mark.parametrize(
    ("occurred_at", "reason"),
    [
        pytest.param((_NOW + timedelta(minutes=6)).isoformat(), "future", id="future"),
        pytest.param((_NOW + timedelta(days=1)).isoformat(), "future", id="tomorrow"),
        pytest.param((_NOW - timedelta(days=100)).isoformat(), "90-day window", id="100-days"),
        pytest.param("yesterday", "occurred_at", id="unparsable"),
        pytest.param("2025-02-30T10:00:00+00:00", "occurred_at", id="no-such-day"),
        pytest.param("2025-03-01T10:00:00", "occurred_at", id="naive"),
        pytest.param("2025-03-01", "occurred_at", id="date-only"),
    ],
)
@pytest.mark.parametrize("content_type", [AVRO, JSON])
def test_bad_occurred_at(occurred_at: str, reason: str, content_type: str) -> None:
    record = _record(data=_data(occurred_at=occurred_at), content_type=content_type)
    assert reason in _reject(record).reason


def test_occurred_at_must_be_rfc3339() -> None:
    # The schemas promise "RFC 3339 with a UTC offset"; a bare epoch is neither.
    record = _record(data=_data(occurred_at=str(int(_AT.timestamp()))))
    assert "occurred_at" in _reject(record).reason


def test_occurred_at_with_offset_and_z() -> None:
    for text in ("2025-03-01T10:00:00Z", "2025-03-01T11:00:00+01:00"):
        assert decode(_record(data=_data(occurred_at=text)), _NOW).occurred_at == _AT


@pytest.mark.parametrize("attribute", ["ce_id", "ce_type", "ce_source"])
def test_missing_cloudevent_attribute(attribute: str) -> None:
    reason = _reject(_with_headers(_record(), **{attribute: None})).reason
    assert attribute in reason


@pytest.mark.parametrize("attribute", ["ce_id", "ce_type", "ce_source"])
def test_empty_cloudevent_attribute(attribute: str) -> None:
    reason = _reject(_with_headers(_record(), **{attribute: b""})).reason
    assert attribute in reason


@pytest.mark.parametrize("specversion", [b"0.3", b"1", b"2.0", None])
def test_wrong_specversion(specversion: bytes | None) -> None:
    record = _with_headers(_record(), ce_specversion=specversion)
    assert "specversion" in _reject(record).reason


def test_event_id_too_long() -> None:
    assert "ce_id" in _reject(_with_headers(_record(), ce_id=b"x" * 129)).reason


def test_header_not_utf8() -> None:
    assert "UTF-8" in _reject(_with_headers(_record(), ce_source=b"\xff\xfe")).reason


def test_truncated_avro() -> None:
    record = _record(content_type=AVRO)
    assert record.value is not None
    for cut in range(len(record.value)):
        assert "malformed Avro" in _reject(_with_value(record, record.value[:cut])).reason


def test_avro_with_trailing_garbage() -> None:
    record = _record(content_type=AVRO)
    assert record.value is not None
    reason = _reject(_with_value(record, record.value + b"\x00garbage")).reason
    assert "malformed Avro" in reason
    assert "trailing" in reason


def test_avro_in_the_schema_registry_wire_format_is_named() -> None:
    """Confluent's serializers put a magic byte 0 and a 4-byte schema id first: refused
    (the engine has no registry to resolve the id) with a reason saying so."""
    record = _record(content_type=AVRO)
    assert record.value is not None
    framed = _with_value(record, b"\0" + (42).to_bytes(4, "big") + record.value)
    reason = _reject(framed).reason
    assert reason.startswith("malformed Avro: framed as Confluent Schema Registry")
    assert "schema id 42" in reason
    assert "Confluent" not in _reject(_with_value(record, b"\0" + record.value[5:])).reason


def test_json_sent_as_avro() -> None:
    record = _with_headers(_record(content_type=JSON), content_type=AVRO.encode())
    assert "malformed Avro" in _reject(record).reason


@pytest.mark.parametrize(
    "content_type", [b"text/plain", b"application/xml", b"application/protobuf"]
)
def test_unsupported_content_type(content_type: bytes) -> None:
    reason = _reject(_with_headers(_record(), content_type=content_type)).reason
    assert "content-type" in reason
    assert content_type.decode() in reason


@pytest.mark.parametrize("field", ["student_id", "tenant", "class_id"])
@pytest.mark.parametrize("value", ["a:b", "{x}", "x" * 65, "", " a", "a b", "-a", "é"], ids=repr)
def test_ids_must_match_the_pattern(field: str, value: str) -> None:
    record = _record(data=_data(**{field: value}))
    assert field in _reject(record).reason


def test_longest_id_is_accepted() -> None:
    assert decode(_record(data=_data(student_id="x" * 64)), _NOW).student_id == "x" * 64


@pytest.mark.parametrize("area", ["Algebra", "a:b", "x" * 49])
def test_area_must_match_its_pattern(area: str) -> None:
    assert "area" in _reject(_record(data=_data(area=area))).reason


def test_unknown_field_is_forbidden() -> None:
    record = _with_value(_record(), orjson.dumps(_data(nickname="ada")))
    assert "nickname" in _reject(record).reason


def test_field_of_another_event_type_is_forbidden() -> None:
    record = _with_value(_record(Component.QUIZ), orjson.dumps(_data(streak_days=3)))
    assert "streak_days" in _reject(record).reason


@pytest.mark.parametrize("content_type", [AVRO, JSON])
def test_quiz_correct_above_total(content_type: str) -> None:
    record = _record(data=_data(correct=5, total=4), content_type=content_type)
    assert "correct must not exceed total" in _reject(record).reason


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"correct": -1}, "correct"), ({"total": 0}, "total"), ({"correct": 0, "total": 0}, "total")],
)
def test_quiz_counts_bounds(changes: dict[str, int], field: str) -> None:
    assert field in _reject(_record(data=_data(**changes))).reason


def test_quiz_correct_equal_to_total_is_fine() -> None:
    assert decode(_record(data=_data(correct=4, total=4)), _NOW).score == 0.75


def test_negative_streak() -> None:
    record = _record(Component.CONSISTENCY, _data(streak_days=-1))
    assert "streak_days" in _reject(record).reason


# -- the tenant of a refused event, for its audit --------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(_record(data=_data(score=1.5)), id="score-out-of-range"),
        pytest.param(_record(data=_data(score=1.5), content_type=AVRO), id="avro-score"),
        pytest.param(_record(data=_data(student_id="a:b")), id="bad-student-id"),
        pytest.param(_record(data=_data(occurred_at="yesterday")), id="unparsable-time"),
        pytest.param(
            _record(data=_data(occurred_at=(_NOW + timedelta(days=1)).isoformat())), id="future"
        ),
        pytest.param(
            _with_value(_record(), orjson.dumps(_data(nickname="ada"))), id="unknown-field"
        ),
        pytest.param(
            _with_value(
                _record(), orjson.dumps({k: v for k, v in _data().items() if k != "score"})
            ),
            id="missing-score",
        ),
        pytest.param(_with_value(_record(), orjson.dumps(_data(score="0.5"))), id="score-string"),
    ],
)
def test_invalid_event_names_its_well_formed_tenant(record: Record) -> None:
    assert _reject(record).tenant == "t1"


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(_record(data=_data(tenant="a:b", score=1.5)), id="tenant-bad-pattern"),
        pytest.param(_record(data=_data(tenant="{t1}")), id="tenant-braces"),
        pytest.param(_with_value(_record(), b"{not json"), id="malformed-json"),
        pytest.param(_with_value(_record(), orjson.dumps(_data(tenant=7))), id="tenant-number"),
        pytest.param(_with_value(_record(content_type=AVRO), b"\x02"), id="truncated-avro"),
    ],
)
def test_invalid_event_without_a_well_formed_tenant(record: Record) -> None:
    assert _reject(record).tenant is None

"""HTTP deliveries of a Kafka record become the ``Record`` the Kafka consumer would see.

Headers arrive lower-cased, as ``dict(starlette.Request.headers)`` gives them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from mastery.dev.trigger import http_headers
from mastery.domain import Component, Observation
from mastery.errors import InvalidEvent
from mastery.events.codec import AVRO, JSON, decode, encode
from mastery.ports import Record
from mastery.topics import XAPI_TOPIC
from mastery.web.events import record_from_http
from tests.helpers import xapi_statement

_NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_AT = _NOW - timedelta(minutes=30)
_DATA = {"student_id": "s1", "tenant": "t1", "occurred_at": _AT.isoformat(), "score": 0.5}
_EXPECTED = Observation("e1", "t1", "s1", Component.QUIZ, 0.5, _AT)


def _encoded(content_type: str = JSON) -> tuple[bytes, dict[str, bytes]]:
    value, headers = encode(Component.QUIZ, _DATA, event_id="e1", content_type=content_type)
    return value, dict(headers)


def _binary_http_headers(kafka_headers: dict[str, bytes]) -> dict[str, str]:
    """What KafkaSource sends: ``ce_x`` Kafka headers as ``ce-x`` HTTP headers."""
    return {
        (f"ce-{name[3:]}" if name.startswith("ce_") else name): value.decode()
        for name, value in kafka_headers.items()
    }


def _connector_http_headers(kafka_headers: dict[str, bytes], topic: str) -> dict[str, str]:
    """What the OpenFaaS kafka-connector sends: every record header as ``x-kafka-<name>``."""
    headers = {f"x-kafka-{name}": value.decode() for name, value in kafka_headers.items()}
    return headers | {"x-topic": topic, "x-kafka-key": "s1", "content-type": "text/plain"}


# -- binary mode -----------------------------------------------------------------------------


def test_binary_cloudevent_headers() -> None:
    headers = {
        "ce-id": "e1",
        "ce-type": "mastery.quiz.v1",
        "ce-source": "urn:src",
        "ce-specversion": "1.0",
        "ce-time": "2025-03-01T11:30:00+00:00",
        "content-type": "application/json",
        "host": "on-quiz.default.svc",
        "user-agent": "kafka-source",
    }
    record = record_from_http(headers, b"{}", "mastery.quiz")
    assert record == Record(
        topic="mastery.quiz",
        value=b"{}",
        key=None,
        headers={
            "ce_id": b"e1",
            "ce_type": b"mastery.quiz.v1",
            "ce_source": b"urn:src",
            "ce_specversion": b"1.0",
            "ce_time": b"2025-03-01T11:30:00+00:00",
            "content-type": b"application/json",
        },
        partition=-1,
        offset=-1,
    )


@pytest.mark.parametrize("content_type", [AVRO, JSON])
def test_binary_delivery_decodes(content_type: str) -> None:
    value, kafka_headers = _encoded(content_type)
    record = record_from_http(_binary_http_headers(kafka_headers), value, "mastery.quiz")
    assert record.headers == kafka_headers
    assert decode(record, _NOW) == _EXPECTED


# -- structured mode -------------------------------------------------------------------------


def test_structured_body_passes_through() -> None:
    envelope = {
        "specversion": "1.0",
        "id": "e1",
        "type": "mastery.quiz.v1",
        "source": "urn:src",
        "datacontenttype": JSON,
        "data": _DATA,
    }
    body = orjson.dumps(envelope)
    headers = {"content-type": "application/cloudevents+json; charset=utf-8"}
    record = record_from_http(headers, body, "mastery.quiz")
    assert record.value == body
    assert record.headers == {"content-type": b"application/cloudevents+json; charset=utf-8"}
    assert decode(record, _NOW) == _EXPECTED


# -- the OpenFaaS kafka-connector ------------------------------------------------------------


def test_connector_form() -> None:
    headers = {
        "x-topic": "mastery.completion",
        "x-kafka-key": "s1",
        "x-kafka-partition": "3",
        "x-kafka-offset": "42",
        "x-kafka-ce_id": "e1",
        "x-kafka-ce_type": "mastery.completion.v1",
        "x-kafka-content-type": AVRO,
        "content-type": "text/plain",
    }
    record = record_from_http(headers, b"\x02", "mastery.quiz")
    assert record == Record(
        topic="mastery.completion",
        value=b"\x02",
        key=b"s1",
        headers={
            "ce_id": b"e1",
            "ce_type": b"mastery.completion.v1",
            "content-type": AVRO.encode(),
        },
        partition=3,
        offset=42,
    )


@pytest.mark.parametrize("content_type", [AVRO, JSON])
def test_connector_delivery_decodes(content_type: str) -> None:
    value, kafka_headers = _encoded(content_type)
    headers = _connector_http_headers(kafka_headers, "mastery.quiz")
    record = record_from_http(headers, value, "mastery.completion")
    assert record.topic == "mastery.quiz"
    assert record.key == b"s1"
    # The record's own content type wins over the connector's HTTP one.
    assert record.headers == kafka_headers
    assert decode(record, _NOW) == _EXPECTED


def test_connector_topic_is_checked_against_the_event_type() -> None:
    value, kafka_headers = _encoded()
    headers = _connector_http_headers(kafka_headers, "mastery.completion")
    record = record_from_http(headers, value, "mastery.quiz")
    assert record.topic == "mastery.completion"
    with pytest.raises(InvalidEvent, match=r"topic mastery\.completion"):
        decode(record, _NOW)


@pytest.mark.parametrize(
    ("partition", "offset", "expected"),
    [("0", "0", (0, 0)), ("7", "123456789", (7, 123456789)), ("x", "", (-1, -1))],
)
def test_connector_partition_and_offset(
    partition: str, offset: str, expected: tuple[int, int]
) -> None:
    headers = {"x-kafka-partition": partition, "x-kafka-offset": offset}
    record = record_from_http(headers, b"", "mastery.quiz")
    assert (record.partition, record.offset) == expected
    assert record.headers == {}


# -- a plain record (an xAPI statement) through Knative's KafkaSource -----------------------


@pytest.mark.parametrize("prefix", ["", "kafkaheader"])  # the dispatcher / the older Go adapter
def test_kafkasource_extensions_give_back_the_tenant_header(prefix: str) -> None:
    """KafkaSource makes a CloudEvent of a plain record, its headers extensions named
    lower-case ``[a-z0-9]`` only: the tenant must still come from ``mastery_tenant``, not
    from the ``homePage`` mapping (which may name another tenant, or none)."""
    statement = xapi_statement("s1", "scored", at=_NOW, home_page="https://unmapped.example")
    headers = {
        "ce-id": "partition:0/offset:12",  # made up by the dispatcher
        "ce-type": "dev.knative.kafka.event",
        "ce-source": "/apis/v1/namespaces/mastery/kafkasources/on-xapi#mastery.xapi",
        "ce-specversion": "1.0",
        f"ce-{prefix}masterytenant": "school-a",
        f"ce-{prefix}contenttype": "application/json",
        "content-type": "application/octet-stream",
    }
    record = record_from_http(headers, orjson.dumps(statement), XAPI_TOPIC)
    assert record.headers["mastery_tenant"] == b"school-a"
    assert record.headers["content-type"] == b"application/json"
    observation = decode(record, _NOW, xapi_tenants={})
    assert (observation.tenant, observation.student_id) == ("school-a", "s1")
    assert observation.event_id == statement["id"]  # the statement's, not the made-up one


# -- the local stand-in for KafkaSource (`mastery trigger`) sends what KafkaSource sends ------


@pytest.mark.parametrize("content_type", [AVRO, JSON])
def test_the_local_trigger_delivers_a_cloudevent_as_it_is(content_type: str) -> None:
    value, headers = _encoded(content_type)
    record = Record("mastery.quiz", value, b"s1", headers, partition=2, offset=7)
    delivered = record_from_http(http_headers(record), value, "mastery.quiz")
    assert decode(delivered, _NOW) == decode(record, _NOW) == _EXPECTED


def test_the_local_trigger_delivers_a_plain_record_with_its_headers() -> None:
    """An xAPI statement on the topic (one the engine took over HTTP, for one): its
    ``mastery_tenant`` header must reach the function, or the statement would be read by
    its ``homePage`` (another tenant, or none: dead-lettered)."""
    statement = xapi_statement("s1", "scored", at=_NOW, home_page="https://unmapped.example")
    kafka_headers = {
        "ce_id": statement["id"].encode(),
        "content-type": JSON.encode(),
        "mastery_tenant": b"school-a",
    }
    value = orjson.dumps(statement)
    record = Record(XAPI_TOPIC, value, b"s1", kafka_headers, partition=0, offset=12)
    delivered = record_from_http(http_headers(record), value, XAPI_TOPIC)
    observation = decode(delivered, _NOW, xapi_tenants={})
    assert (observation.tenant, observation.student_id) == ("school-a", "s1")
    assert observation.event_id == statement["id"]


# -- defaults --------------------------------------------------------------------------------


def test_default_topic_without_x_topic() -> None:
    record = record_from_http({"ce-id": "e1"}, b"{}", "mastery.quality")
    assert record.topic == "mastery.quality"
    assert record.key is None
    assert record.headers == {"ce_id": b"e1"}


def test_empty_x_topic_falls_back_to_default() -> None:
    assert record_from_http({"x-topic": ""}, b"", "mastery.quiz").topic == "mastery.quiz"


def test_no_content_type_adds_none() -> None:
    record = record_from_http({"ce-id": "e1", "accept": "*/*"}, b"{}", "mastery.quiz")
    assert "content-type" not in record.headers


@pytest.mark.parametrize("value", ["²", "٣", "1e3", "", " 7", "99999999999999999999"])
def test_a_partition_or_offset_that_is_not_a_plain_decimal_is_unknown(value: str) -> None:
    """``str.isdigit`` takes "²" and "٣", which ``int`` refuses: a trigger's odd header
    gave a 500, which it retries forever (found by a security reviewer)."""
    headers = {"x-topic": "mastery.quiz", "x-kafka-partition": value, "x-kafka-offset": value}
    record = record_from_http(headers, b"\x02", "mastery.quiz")
    assert (record.partition, record.offset) == (-1, -1)

"""Event-handler functions over HTTP: Knative KafkaSource and the OpenFaaS kafka-connector.

Both deliveries become the same ``Record`` and take the same ``Ingestor`` path as the
Kafka-native consumer:
- CloudEvents over HTTP, binary mode (``ce-*`` headers) or structured mode
  (``application/cloudevents+json``), as KafkaSource delivers them;
- the kafka-connector form: the raw record as body, ``X-Topic``, ``X-Kafka-Key`` and
  each record header as ``X-Kafka-<name>``.

A plain Kafka record (not a CloudEvent: an xAPI statement on ``mastery.xapi``) reaches
the function from KafkaSource as a CloudEvent the dispatcher makes up, its record headers
turned into extensions: lower-cased and stripped to ``[a-z0-9]`` (``mastery_tenant`` ->
``ce-masterytenant``), or, by the older Go adapter, also prefixed ``kafkaheader``. The
headers the engine reads are restored from those.

A bad event is answered 200 once it is in the DLQ (retrying cannot fix it); Redis or the
broker being down is 503, so the trigger retries.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mastery.events.xapi import TENANT_HEADER
from mastery.ports import Record
from mastery.topics import event_topic
from mastery.web.app import model_response, read_limited
from mastery.web.responses import EventOutcome

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.domain import Component
    from mastery.web.app import Context

__all__ = ["event_handler", "record_from_http", "topic_handler"]

_KAFKA_HEADER = "x-kafka-"
_CONNECTOR_HEADERS = frozenset({"x-kafka-key", "x-kafka-partition", "x-kafka-offset"})
#: KafkaSource's extension name of a record header the engine reads -> the header.
_EXTENSION_HEADERS = {
    prefix + re.sub("[^a-z0-9]", "", name): name
    for name in (TENANT_HEADER, "content-type")
    for prefix in ("", "kafkaheader")
}


_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def record_from_http(headers: dict[str, str], body: bytes, default_topic: str) -> Record:
    """The Kafka record an HTTP delivery stands for."""
    topic = headers.get("x-topic") or default_topic
    key = headers.get("x-kafka-key")
    kafka_headers: dict[str, bytes] = {}
    for name, value in headers.items():
        if name.startswith("ce-"):
            restored = _EXTENSION_HEADERS.get(name[3:])
            kafka_headers[restored or f"ce_{name[3:]}"] = value.encode()
        elif name.startswith(_KAFKA_HEADER) and name not in _CONNECTOR_HEADERS:
            kafka_headers[name[len(_KAFKA_HEADER) :]] = value.encode()
    if "content-type" in headers and "content-type" not in kafka_headers:
        kafka_headers["content-type"] = headers["content-type"].encode()
    return Record(
        topic=topic,
        value=body,
        key=key.encode() if key else None,
        headers=kafka_headers,
        partition=_int(headers.get("x-kafka-partition")),
        offset=_int(headers.get("x-kafka-offset")),
    )


def event_handler(component: Component) -> Callable[[Request, Context], Awaitable[Response]]:
    return topic_handler(event_topic(component))


def topic_handler(topic: str) -> Callable[[Request, Context], Awaitable[Response]]:
    """The handler of ``topic``'s records as KafkaSource / the kafka-connector deliver them."""

    async def handle(request: Request, ctx: Context) -> Response:
        body = await read_limited(request, ctx.resources.settings.max_event_bytes)
        # items(): one pass over the raw headers (each lookup by name is a scan of them)
        record = record_from_http(dict(request.headers.items()), body, topic)
        outcome, reason = await ctx.resources.ingestor.ingest_one(record)
        reasons = {"reason": reason} if reason else {}
        return model_response(EventOutcome(outcome=outcome.value, **reasons))

    return handle


def _int(value: str | None) -> int:
    """A partition or offset header; -1 when absent or not a plain decimal ("²" is a
    digit to ``str.isdigit``, not to ``int``)."""
    return int(value) if value and _DECIMAL.fullmatch(value) else -1

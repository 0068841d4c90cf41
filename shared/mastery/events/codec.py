"""Learning events on the wire: CloudEvents Kafka binary/structured binding, Avro or JSON data."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import fastavro
import orjson
from cloudevents.http import CloudEvent
from cloudevents.kafka import to_binary
from fastavro.validation import ValidationError as AvroValidationError
from fastavro.validation import ValidationErrorData
from pydantic import ValidationError

from mastery.domain import DEFAULT_MODEL, Component, Observation, ScoringModel
from mastery.errors import InvalidEvent
from mastery.events.comparison import digest
from mastery.events.models import event_model
from mastery.events.schemas import cloudevent_type, component_of_type, parsed_schema
from mastery.events.xapi import TENANT_HEADER, observation_of, parse_statement, statement_id
from mastery.fields import MAX_JSON_DEPTH, is_id, too_deep
from mastery.topics import XAPI_TOPIC

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from mastery.ports import Record

__all__ = ["AVRO", "JSON", "decode", "encode"]

AVRO = "application/avro"
JSON = "application/json"
_STRUCTURED = "application/cloudevents+json"
_AVRO_TYPES = frozenset({AVRO, "avro/binary", "application/vnd.apache.avro+binary"})
_MAX_ID = 128


def decode(
    record: Record,
    now: datetime,
    model: ScoringModel = DEFAULT_MODEL,
    *,
    tenant: str | None = None,
    xapi_tenants: Mapping[str, str] | None = None,
) -> Observation:
    """Turn a record into an observation, or raise ``InvalidEvent`` saying why not.

    Records of ``mastery.xapi`` hold one xAPI statement (JSON, CloudEvent attributes
    optional); their tenant is ``tenant`` (HTTP: the token's), else the record's
    ``mastery_tenant`` header, else the one ``xapi_tenants`` maps the actor's
    ``account.homePage`` to. One that maps to nothing is ``IgnoredEvent``.
    """
    if record.topic == XAPI_TOPIC:
        return _decode_xapi(record, now, model, tenant, xapi_tenants or {})
    attrs, content_type, data = _unbind(record)
    for name in ("id", "type", "source"):
        if not attrs.get(name):
            raise InvalidEvent(f"missing CloudEvent attribute ce_{name}")
    if attrs.get("specversion") != "1.0":
        raise InvalidEvent(f"unsupported CloudEvents specversion {attrs.get('specversion')!r}")
    event_id = attrs["id"]
    if len(event_id) > _MAX_ID:
        raise InvalidEvent(f"ce_id longer than {_MAX_ID} characters")
    component = component_of_type(attrs["type"])
    if component is None:
        raise InvalidEvent(f"unknown event type {attrs['type']!r}")
    topic_component = component_of_type(f"{record.topic}.v1")
    if topic_component is not None and topic_component is not component:
        raise InvalidEvent(f"event type {attrs['type']!r} does not belong on topic {record.topic}")

    payload = _payload(component, content_type, data)
    try:
        event = event_model(component).model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(_describe(exc), _tenant_of(payload)) from None
    if reason := model.inadmissible(event.occurred_at, now):
        raise InvalidEvent(reason, event.tenant)
    return Observation(
        event_id=event_id,
        tenant=event.tenant,
        student_id=event.student_id,
        component=component,
        score=event.score,
        occurred_at=event.occurred_at,
        area=event.area,
        class_id=event.class_id,
    )


def _decode_xapi(
    record: Record,
    now: datetime,
    model: ScoringModel,
    tenant: str | None,
    tenants: Mapping[str, str],
) -> Observation:
    attrs, content_type, data = _unbind(record)
    if content_type != JSON and not content_type.endswith("+json"):
        raise InvalidEvent(f"unsupported content-type {content_type!r} for an xAPI statement")
    if tenant is None and (named := record.headers.get(TENANT_HEADER)) is not None:
        tenant = _decode_text(named)
        if not is_id(tenant):
            raise InvalidEvent(f"header {TENANT_HEADER} is not a tenant id")
    raw = data if isinstance(data, dict) else _loads(data)
    try:
        statement = parse_statement(raw)
    except InvalidEvent as exc:  # its id as it says it, for the dead letter's log line
        given = raw.get("id")
        raise InvalidEvent(
            exc.reason, exc.tenant, given if isinstance(given, str) else None
        ) from None
    # The statement's own id (as a voiding names it), else the record's, else derived.
    event_id = str(statement.id) if statement.id else attrs.get("id") or statement_id(raw)
    if len(event_id) > _MAX_ID:
        raise InvalidEvent(f"ce_id longer than {_MAX_ID} characters")
    try:
        obs = observation_of(
            statement, event_id, tenant=tenant, tenants=tenants, now=now, model=model
        )
    except InvalidEvent as exc:  # the id it would have been applied under
        raise InvalidEvent(exc.reason, exc.tenant, event_id) from None
    # What a statement under the same id must say too (a voiding is known by its id alone).
    return replace(obs, digest=digest(statement)) if obs.voidable else obs


def encode(
    component: Component,
    data: Mapping[str, Any],
    *,
    event_id: str,
    source: str = "urn:mastery:producer",
    content_type: str = AVRO,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Value and headers of a binary-mode CloudEvent, as producers should send it."""
    if content_type == AVRO:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed_schema(component), dict(data))
        body = buf.getvalue()
    else:
        body = orjson.dumps(data)
    attributes: dict[str, Any] = {
        "id": event_id,
        "type": cloudevent_type(component),
        "source": source,
        "datacontenttype": content_type,
        "time": data.get("occurred_at"),
    }
    event = CloudEvent(attributes, body)
    message = to_binary(event, data_marshaller=lambda b: b)
    value = message.value if isinstance(message.value, bytes) else message.value.encode()
    return value, list(message.headers.items())


def _unbind(record: Record) -> tuple[dict[str, str], str, bytes | dict[str, Any]]:
    """CloudEvent attributes, data content type and data, from binary or structured mode."""
    attrs: dict[str, str] = {}
    content_type = ""
    for name, value in record.headers.items():
        key = name.lower()
        if key.startswith("ce_"):
            attrs[key[3:]] = _decode_text(value)
        elif key == "content-type":
            content_type = _decode_text(value).split(";")[0].strip().lower()
    if content_type == _STRUCTURED:
        return _unbind_structured(record.value)
    if record.value is None:
        raise InvalidEvent("empty record value")
    return attrs, content_type or JSON, record.value


def _unbind_structured(value: bytes | None) -> tuple[dict[str, str], str, bytes | dict[str, Any]]:
    envelope = _loads(value)
    data: bytes | dict[str, Any]
    if "data_base64" in envelope:
        try:
            data = base64.b64decode(envelope.pop("data_base64"), validate=True)
        except (ValueError, TypeError):
            raise InvalidEvent("data_base64 is not valid base64") from None
    else:
        data = envelope.pop("data", None)
        if not isinstance(data, dict):
            raise InvalidEvent("structured CloudEvent data must be a JSON object")
    for name, attr in envelope.items():
        if not isinstance(attr, str):
            raise InvalidEvent(f"CloudEvent attribute ce_{name} must be a string")
    content_type = envelope.pop("datacontenttype", JSON).split(";")[0].strip().lower()
    return envelope, content_type, data


def _payload(
    component: Component, content_type: str, data: bytes | dict[str, Any]
) -> dict[str, Any]:
    schema = parsed_schema(component)
    if content_type in _AVRO_TYPES:
        if not isinstance(data, bytes):
            raise InvalidEvent("Avro data must be binary")
        return _read_avro(data, schema)
    if content_type != JSON and not content_type.endswith("+json"):
        raise InvalidEvent(f"unsupported content-type {content_type!r}")
    payload = data if isinstance(data, dict) else _loads(data)
    try:
        fastavro.validate(payload, schema, raise_errors=True)
    except AvroValidationError as exc:
        problems = "; ".join(_mismatch(e) for e in exc.errors)
        raise InvalidEvent(
            f"does not match schema {schema['name']}: {problems}", _tenant_of(payload)
        ) from None
    return payload


def _read_avro(data: bytes, schema: Any) -> dict[str, Any]:
    try:
        return _avro_record(data, schema)
    except InvalidEvent:
        if data[:1] == b"\0" and _is_avro_record(data[5:], schema):
            raise InvalidEvent(
                "malformed Avro: framed as Confluent Schema Registry's wire format (magic "
                f"byte 0, schema id {int.from_bytes(data[1:5], 'big')}); send the bare Avro "
                "record of the event type's schema (events/*.avsc)"
            ) from None
        raise


def _is_avro_record(data: bytes, schema: Any) -> bool:
    try:
        _avro_record(data, schema)
    except InvalidEvent:
        return False
    return True


def _avro_record(data: bytes, schema: Any) -> dict[str, Any]:
    buf = io.BytesIO(data)
    try:
        payload = fastavro.schemaless_reader(buf, schema, None)
    except Exception as exc:  # fastavro raises many kinds on truncated or corrupt input
        raise InvalidEvent(f"malformed Avro: {type(exc).__name__}") from None
    if buf.tell() != len(data):
        raise InvalidEvent("malformed Avro: trailing bytes after the record")
    if not isinstance(payload, dict):
        raise InvalidEvent("malformed Avro: not a record")
    return payload


def _loads(value: bytes | None) -> dict[str, Any]:
    if not value:
        raise InvalidEvent("empty record value")
    try:
        loaded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc.msg}") from None
    if not isinstance(loaded, dict):
        raise InvalidEvent("JSON data must be an object")
    if too_deep(loaded):
        raise InvalidEvent(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    return loaded


def _decode_text(value: bytes | str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidEvent("header is not UTF-8") from None


def _tenant_of(payload: Mapping[str, Any]) -> str | None:
    """The tenant of an invalid event, when it names a well-formed one (for its audit)."""
    tenant = payload.get("tenant")
    return tenant if is_id(tenant) else None


def _mismatch(error: ValidationErrorData) -> str:
    """A field that does not match the schema: its name, the type found and the one
    expected, not its value (fastavro quotes it, and a reason reaches the DLQ header, the
    audit and the log: the value may be personal data, or the whole record)."""
    found = "null" if error.datum is None else type(error.datum).__name__
    return f"{error.field} is {found}, expected {error.schema}"


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "event"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid field {where}: {first['msg']}{more}"

"""The AsyncAPI 3 document of the topics, built from ``events/*.avsc`` and the topic list.

Event payloads are the ``.avsc`` files themselves (``schemaFormat`` Avro), so the document
cannot drift from what the codec validates; ``mastery asyncapi`` writes docs/asyncapi.json.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from mastery.domain import Component
from mastery.events.kafka import DLQ_HEADERS
from mastery.events.notifications import LEVEL_CHANGED_TYPE
from mastery.events.schemas import cloudevent_type, raw_schema, schema_dir
from mastery.events.xapi import TENANT_HEADER, Statement
from mastery.fields import ID_PATTERN
from mastery.topics import (
    AUDIT_TOPIC,
    BATCH_PREFIX,
    DLQ_SUFFIX,
    LEVEL_CHANGED_TOPIC,
    XAPI_TOPIC,
    all_topics,
    batch_topics,
    dlq_topic,
    event_topic,
)

__all__ = ["asyncapi_document", "rendered"]

_AVRO = "application/vnd.apache.avro;version=1.9.0"


def _ce_headers(ce_type: str) -> dict[str, Any]:
    """The CloudEvents Kafka binary binding's headers."""
    return {
        "type": "object",
        "required": ["ce_specversion", "ce_id", "ce_type", "ce_source"],
        "properties": {
            "ce_specversion": {"const": "1.0"},
            "ce_id": {"type": "string", "description": "The event id (idempotency key)"},
            "ce_type": {"const": ce_type},
            "ce_source": {"type": "string"},
            "ce_time": {"type": "string", "format": "date-time"},
            "content-type": {"enum": ["application/avro", "application/json"]},
        },
    }


def _channel(address: str, description: str, message: str) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
    }


def _name(topic: str) -> str:
    return topic.replace("mastery.", "").replace(".", "-")


def asyncapi_document() -> dict[str, Any]:
    """Channels for every topic the stack deploys, operations from the engine's side."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    dlq_headers = {
        "type": "object",
        "description": "The original record's headers, plus why and where it was refused",
        "required": list(DLQ_HEADERS),
        "properties": {h: {"type": "string"} for h in DLQ_HEADERS},
    }
    for component in Component:
        topic, name = event_topic(component), component.value
        messages[name] = {
            "name": cloudevent_type(component),
            "title": f"A {name} learning event",
            "contentType": "application/avro",
            "headers": _ce_headers(cloudevent_type(component)),
            "payload": {"schemaFormat": _AVRO, "schema": raw_schema(component)},
            "bindings": {"kafka": {"key": {"type": "string", "description": "student id"}}},
        }
        channels[name] = _channel(topic, f"{name} events in (key: student id)", name)
        operations[f"receive-{name}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": "Applied by on-" + name + " / mastery consume",
        }
    for topic in [t for t in all_topics(BATCH_PREFIX) if t.endswith(DLQ_SUFFIX)]:
        name, message = _name(topic), f"dead-letter-{_name(topic)}"
        source = topic.removesuffix(DLQ_SUFFIX)
        messages[message] = {
            "title": f"A record refused on {source}: its value, key, headers",
            "headers": dlq_headers,
            "payload": {"description": "the original record's value, unchanged"},
        }
        channels[name] = _channel(topic, f"refused records of {source}", message)
        operations[f"send-{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": "Written before the refusal is acknowledged",
        }
    level = orjson.loads((schema_dir() / "level-changed.avsc").read_bytes())
    messages["level-changed"] = {
        "name": LEVEL_CHANGED_TYPE,
        "title": "A student moved to another level",
        "contentType": "application/json",
        "headers": _ce_headers(LEVEL_CHANGED_TYPE),
        "payload": {"schemaFormat": _AVRO, "schema": level},
    }
    channels["level-changed"] = _channel(
        LEVEL_CHANGED_TOPIC, "level changes out (notification service)", "level-changed"
    )
    operations["send-level-changed"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/level-changed"},
    }
    messages["access"] = {
        "title": "One data access (who, what, whom, outcome), written before the answer",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["kind", "at", "function", "route", "correlation_id", "status"],
            "properties": {
                "kind": {"const": "access"},
                "at": {"type": "string", "format": "date-time"},
                "function": {"type": "string"},
                "route": {"type": "string"},
                "correlation_id": {"type": "string"},
                "subject": {"type": ["string", "null"]},
                "actor": {"type": ["string", "null"]},
                "role": {"type": ["string", "null"]},
                "tenant": {"type": ["string", "null"]},
                "students": {"type": "array", "items": {"type": "string"}},
                "outcome": {"type": "string"},
                "status": {"type": "integer"},
            },
        },
    }
    channels["audit"] = _channel(AUDIT_TOPIC, "the access audit (key: tenant)", "access")
    operations["send-audit"] = {"action": "send", "channel": {"$ref": "#/channels/audit"}}
    messages["batch"] = {
        "name": "mastery.batch.v1",
        "title": "Run a queued batch",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["tenant", "batch_id"],
            "properties": {"tenant": {"type": "string"}, "batch_id": {"type": "string"}},
        },
    }
    for topic in batch_topics(BATCH_PREFIX):
        name = _name(topic)
        channels[name] = _channel(topic, f"batch runs, {name} priority", "batch")
        operations[f"send-{name}"] = {"action": "send", "channel": {"$ref": f"#/channels/{name}"}}
        operations[f"receive-{name}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
        }
    messages["xapi-statement"] = {
        "name": "xapi.statement",
        "title": "One xAPI 1.0.x statement (forwarded by an LRS or a log shipper)",
        "contentType": "application/json",
        "payload": Statement.model_json_schema(),
        "headers": {
            "type": "object",
            "properties": {
                TENANT_HEADER: {
                    "type": "string",
                    "pattern": ID_PATTERN,
                    "description": "The tenant, set by POST and PUT /xapi/statements (trusted "
                    "producers only: Kafka ACLs); else the actor's account.homePage maps it",
                },
                "ce_id": {"type": "string", "description": "for a statement without an id"},
            },
        },
        "description": "Mapped to an observation (docs/xapi.md), or a voiding of one; tenant "
        "from the mastery_tenant header, else account.homePage (MASTERY_XAPI_TENANTS); the "
        "statement id is the idempotency key (ce_id, else one derived, when it has none)",
    }
    channels["xapi"] = _channel(
        XAPI_TOPIC, "xAPI statements in, and those posted", "xapi-statement"
    )
    operations["receive-xapi"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/xapi"},
        "summary": "Applied by on-xapi / mastery consume; statements not mapped are ignored",
    }
    extra = set(all_topics(BATCH_PREFIX)) - {c["address"] for c in channels.values()}
    if extra:
        raise ValueError(f"topics without a channel: {sorted(extra)}")
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Mastery Engine events",
            "version": "1",
            "description": "Kafka topics; CloudEvents Kafka binary binding. "
            f"Every event topic has a dead-letter topic ({dlq_topic('<topic>')}).",
        },
        "defaultContentType": "application/avro",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def rendered(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

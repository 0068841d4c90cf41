"""Batch requests on Kafka: ``<prefix>.<priority>`` topics, one small CloudEvent per batch.

The message names the batch (tenant, id) and nothing else: the request itself (ids,
caller, deadline) is in the batch record in Redis, written before the message is sent.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import orjson

from mastery.errors import InvalidEvent
from mastery.fields import is_id
from mastery.ports import OutMessage
from mastery.topics import batch_topic

if TYPE_CHECKING:
    from datetime import datetime

    from mastery.domain.batch import Priority
    from mastery.ports import Record

__all__ = ["BATCH_ID", "CE_TYPE", "batch_message", "decode_batch"]

CE_TYPE = "mastery.batch.v1"
#: Batch ids are ours (uuid4 hex); anything else never reaches a Redis key.
BATCH_ID = re.compile(r"^[0-9a-f]{32}$")


def batch_message(
    prefix: str, priority: Priority, tenant: str, batch_id: str, now: datetime, source: str
) -> OutMessage:
    """The CloudEvent (Kafka binary binding) that asks a worker to run a batch."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", batch_id.encode()),
        ("ce_type", CE_TYPE.encode()),
        ("ce_source", source.encode()),
        ("ce_time", now.isoformat().encode()),
        ("content-type", b"application/json"),
    ]
    value = orjson.dumps({"tenant": tenant, "batch_id": batch_id})
    return OutMessage(batch_topic(prefix, priority), value, batch_id.encode(), headers)


def decode_batch(record: Record) -> tuple[str, str]:
    """(tenant, batch id) of a batch message; ``InvalidEvent`` if it names none.

    Accepts the binary binding (the data is the value) and structured CloudEvents
    (the data under ``data``), as KafkaSource and the local trigger deliver them.
    """
    try:
        doc = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        raise InvalidEvent("malformed batch message: not JSON") from None
    if isinstance(doc, dict) and "specversion" in doc:
        doc = doc.get("data")
    if not isinstance(doc, dict):
        raise InvalidEvent("malformed batch message: not an object")
    tenant, batch_id = doc.get("tenant"), doc.get("batch_id")
    if not isinstance(tenant, str) or not is_id(tenant):
        raise InvalidEvent("batch message names no valid tenant")
    if not isinstance(batch_id, str) or not BATCH_ID.fullmatch(batch_id):
        raise InvalidEvent("batch message names no valid batch_id", tenant)
    return tenant, batch_id

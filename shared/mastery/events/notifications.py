"""Level-change notifications: CloudEvents on ``mastery.level-changed``.

``apply.lua`` writes each change to a Redis outbox in the same atomic step as the state,
so a change is recorded exactly once however often its events are redelivered. The
ingest path publishes the outbox's notes and then drops them; a publish cut off by a
crash is retried from the outbox. The CloudEvent id is
``<tenant>:<student>:<version>:<changed_at ms>`` and its source ``LEVEL_CHANGED_SOURCE``,
whichever function publishes it and on every attempt, so a consumer that deduplicates by
source and id sees each change once. The time is in it because a student's version
starts again at 1 after an erasure: ``<version>`` alone would name a later change like
an earlier one, and a consumer would drop it as a duplicate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from cloudevents.http import CloudEvent
from cloudevents.kafka import to_binary

from mastery.ports import OutMessage
from mastery.topics import LEVEL_CHANGED_TOPIC

__all__ = ["LEVEL_CHANGED_SOURCE", "LEVEL_CHANGED_TYPE", "change_data", "level_changed"]

LEVEL_CHANGED_TYPE = "mastery.level-changed.v1"
LEVEL_CHANGED_SOURCE = "/mastery/level-changed"


def change_data(note: bytes) -> dict[str, Any]:
    """An outbox note as the event's data (``events/level-changed.avsc``): the time as a
    datetime, and the masteries as floats (Lua's cjson writes ``0`` and ``1`` bare)."""
    doc = orjson.loads(note)
    changed_at = datetime.fromtimestamp(doc["changed_at"] / 1000, UTC)
    masteries = {k: float(doc[k]) for k in ("mastery", "previous_mastery")}
    return {**doc, **masteries, "changed_at": changed_at}


def level_changed(note: bytes) -> OutMessage:
    """The message for one outbox note."""
    doc = change_data(note)
    changed_at: datetime = doc["changed_at"]
    at_ms = round(changed_at.timestamp() * 1000)
    attributes = {
        "id": f"{doc['tenant']}:{doc['student_id']}:{doc['version']}:{at_ms}",
        "type": LEVEL_CHANGED_TYPE,
        "source": LEVEL_CHANGED_SOURCE,
        "subject": doc["student_id"],
        "time": changed_at.isoformat(),
        "datacontenttype": "application/json",
    }
    message = to_binary(CloudEvent(attributes, orjson.dumps(doc)), data_marshaller=lambda b: b)
    value = message.value if isinstance(message.value, bytes) else message.value.encode()
    return OutMessage(
        LEVEL_CHANGED_TOPIC, value, doc["student_id"].encode(), list(message.headers.items())
    )

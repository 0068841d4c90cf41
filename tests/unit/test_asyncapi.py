"""The AsyncAPI document: every topic, the .avsc files as payloads, committed and current."""

from __future__ import annotations

from pathlib import Path

import orjson

from mastery.domain import Component
from mastery.events.asyncapi import asyncapi_document, rendered
from mastery.events.schemas import schema_dir
from mastery.topics import BATCH_PREFIX, all_topics

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_the_committed_document_is_current() -> None:
    assert COMMITTED.read_text() == rendered(asyncapi_document()), (
        "docs/asyncapi.json is stale: run `mastery asyncapi --write docs/asyncapi.json`"
    )


def test_every_topic_has_a_channel_and_every_ref_resolves() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"].startswith("3.")
    assert {c["address"] for c in doc["channels"].values()} == set(all_topics(BATCH_PREFIX))
    for channel in doc["channels"].values():
        for ref in channel["messages"].values():
            assert ref["$ref"].rsplit("/", 1)[1] in doc["components"]["messages"]
    for op in doc["operations"].values():
        assert op["channel"]["$ref"].rsplit("/", 1)[1] in doc["channels"]


def test_event_payloads_are_the_avsc_files() -> None:
    messages = asyncapi_document()["components"]["messages"]
    for component in Component:
        avsc = orjson.loads((schema_dir() / f"{component}.avsc").read_bytes())
        assert messages[component.value]["payload"]["schema"] == avsc
    level = orjson.loads((schema_dir() / "level-changed.avsc").read_bytes())
    assert messages["level-changed"]["payload"]["schema"] == level

"""The date-times of request bodies: RFC 3339 text with an offset, never a number.

pydantic's ``AwareDatetime`` alone reads a number (or a number in a string) as a Unix
time; the document says RFC 3339, so every date-time field of a request refuses them.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from mastery.events.xapi import Statement
from mastery.web.app import validate
from mastery.web.openapi import gateway_document
from mastery.web.problems import Problem
from mastery.web.requests import AuditRequest
from tests.helpers import xapi_statement

#: (schema name, property) -> (model, a valid body without the property)
FIELDS: dict[tuple[str, str], tuple[type[BaseModel], dict[str, Any]]] = {
    ("AuditRequest", "since"): (AuditRequest, {}),
    ("Statement", "timestamp"): (Statement, xapi_statement("s1")),
    ("Statement", "stored"): (Statement, xapi_statement("s1")),
}


def _date_times(node: Any, schemas: dict[str, Any]) -> set[tuple[str, str]]:
    """(schema, property) of every ``date-time`` the request bodies under ``node`` hold."""
    found: set[tuple[str, str]] = set()
    seen: set[str] = set()
    todo = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(item)
        if not isinstance(item, dict):
            continue
        ref = item.get("$ref", "")
        if ref.startswith("#/components/schemas/") and ref not in seen:
            seen.add(ref)
            name = ref.rsplit("/", 1)[1]
            for prop, schema in schemas[name].get("properties", {}).items():
                if "date-time" in str(schema):
                    found.add((name, prop))
            todo.append(schemas[name])
        todo.extend(item.values())
    return found


def test_every_date_time_of_a_request_body_is_checked_here() -> None:
    doc = gateway_document()
    bodies = [
        op["requestBody"]
        for item in doc["paths"].values()
        for op in item.values()
        if "requestBody" in op
    ]
    assert _date_times(bodies, doc["components"]["schemas"]) == set(FIELDS)


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("bad", [-8.2e-226, 0, 1764417600, "1764417600", True])
def test_a_number_is_refused_with_422(field: tuple[str, str], bad: object) -> None:
    model, base = FIELDS[field]
    with pytest.raises(Problem) as caught:
        validate(model, {**base, field[1]: bad})
    assert caught.value.status == 422
    assert [e["field"] for e in caught.value.extensions["errors"]] == [field[1]]


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("text", ["2026-11-29T12:00:00Z", "2026-11-29T12:00:00.5+01:00"])
def test_rfc3339_text_is_taken(field: tuple[str, str], text: str) -> None:
    model, base = FIELDS[field]
    assert getattr(validate(model, {**base, field[1]: text}), field[1]).tzinfo is not None


def test_the_schema_still_says_a_date_time_string() -> None:
    schema = gateway_document()["components"]["schemas"]["AuditRequest"]["properties"]["since"]
    assert {"type": "string", "format": "date-time"} in schema["anyOf"]

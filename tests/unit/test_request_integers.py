"""The integers of request bodies: JSON Schema's ``integer``, booleans and strings refused."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from mastery.web.app import validate
from mastery.web.problems import Problem
from mastery.web.requests import AuditRequest, BatchRequest, HistoryRequest, RiskRequest

CASES: list[tuple[type[BaseModel], dict[str, object], str]] = [
    (AuditRequest, {}, "limit"),
    (RiskRequest, {}, "limit"),
    (HistoryRequest, {"student_id": "s1"}, "days"),
    (BatchRequest, {"student_ids": ["s1"]}, "deadline_s"),
]


@pytest.mark.parametrize(("model", "base", "name"), CASES)
@pytest.mark.parametrize("bad", [True, False, "28", [28], 28.5])
def test_a_boolean_a_string_or_a_fraction_is_refused_with_422(
    model: type[BaseModel], base: dict[str, object], name: str, bad: object
) -> None:
    with pytest.raises(Problem) as caught:
        validate(model, {**base, name: bad})
    assert caught.value.status == 422


@pytest.mark.parametrize(("model", "base", "name"), CASES)
@pytest.mark.parametrize(("given", "read"), [(28, 28), (28.0, 28)])
def test_an_integral_number_is_an_integer(
    model: type[BaseModel], base: dict[str, object], name: str, given: object, read: int
) -> None:
    value = getattr(validate(model, {**base, name: given}), name)
    assert value == read
    assert type(value) is int


@pytest.mark.parametrize(("model", "base", "name"), CASES)
def test_the_schema_still_says_integer(
    model: type[BaseModel], base: dict[str, object], name: str
) -> None:
    prop = model.model_json_schema()["properties"][name]
    types = [prop.get("type")] + [p.get("type") for p in prop.get("anyOf", [])]
    assert "integer" in types
    assert "boolean" not in types

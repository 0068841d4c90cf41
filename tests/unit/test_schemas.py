"""The pydantic event models agree with ``events/*.avsc``, field by field.

Everything is read from the schema files, so a field added to one side only fails here.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from pydantic import AwareDatetime

from mastery.domain import Component
from mastery.events.models import LearningEvent, event_model
from mastery.events.schemas import (
    cloudevent_type,
    component_of_type,
    parsed_schema,
    raw_schema,
    schema_dir,
)

_EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
_AVSC_FILES = sorted(_EVENTS_DIR.glob("*.avsc"))

#: Avro primitive -> the Python types a model field of it may be annotated with.
#: Timestamps travel as RFC 3339 strings and are parsed into aware datetimes.
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str, AwareDatetime),
    "double": (float,),
    "int": (int,),
}


def _avsc(component: Component) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((_EVENTS_DIR / f"{component}.avsc").read_bytes())
    return loaded


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _python_side(annotation: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of a field annotation."""
    annotation = _strip_annotated(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [_strip_annotated(a) for a in typing.get_args(annotation)]
        others = [a for a in args if a is not type(None)]
        assert len(others) == 1, f"union of several types: {annotation}"
        return others[0], len(others) < len(args)
    return annotation, False


def _avro_side(avro_type: Any) -> tuple[str, bool]:
    """(the non-null primitive, whether null is allowed) of an Avro field type."""
    if isinstance(avro_type, list):
        others = [t for t in avro_type if t != "null"]
        assert len(others) == 1, f"union of several types: {avro_type}"
        return others[0], len(others) < len(avro_type)
    assert isinstance(avro_type, str), f"not a primitive: {avro_type}"
    return avro_type, False


def test_every_component_has_a_schema_file() -> None:
    assert {p.stem for p in _AVSC_FILES} == {c.value for c in Component} | {"level-changed"}


@pytest.mark.parametrize("path", _AVSC_FILES, ids=lambda p: p.name)
def test_avsc_parses(path: Path) -> None:
    schema = fastavro.parse_schema(orjson.loads(path.read_bytes()))
    assert isinstance(schema, dict)
    assert schema["type"] == "record"
    assert schema["name"].startswith("mastery.events.v1.")


@pytest.mark.parametrize("component", list(Component))
def test_record_name_and_doc(component: Component) -> None:
    avsc = _avsc(component)
    assert avsc["name"] == event_model(component).__name__
    assert avsc["namespace"] == "mastery.events.v1"
    assert f"mastery.{component}" in avsc["doc"]
    assert cloudevent_type(component) in avsc["doc"]


@pytest.mark.parametrize("component", list(Component))
def test_same_field_names_in_the_same_order(component: Component) -> None:
    avro_names = [f["name"] for f in _avsc(component)["fields"]]
    assert list(event_model(component).model_fields) == avro_names


@pytest.mark.parametrize("component", list(Component))
def test_same_types_and_optionality(component: Component) -> None:
    fields = event_model(component).model_fields
    for avro_field in _avsc(component)["fields"]:
        name = avro_field["name"]
        field = fields.get(name)
        assert field is not None, f"{name}: in the .avsc, not in {event_model(component).__name__}"
        primitive, avro_nullable = _avro_side(avro_field["type"])
        python_type, python_nullable = _python_side(field.annotation)

        assert primitive in _PYTHON_TYPES, f"{name}: no mapping for Avro {primitive!r}"
        assert python_type in _PYTHON_TYPES[primitive], (
            f"{name}: Avro {primitive!r} but Python {python_type!r}"
        )
        assert python_nullable == avro_nullable, f"{name}: nullable differs"
        if "default" in avro_field:
            assert not field.is_required(), f"{name}: Avro default, Python required"
            assert field.default == avro_field["default"], f"{name}: defaults differ"
        else:
            assert field.is_required(), f"{name}: required in Avro, has a default in Python"


@pytest.mark.parametrize("component", list(Component))
def test_optional_fields_default_to_none(component: Component) -> None:
    for avro_field in _avsc(component)["fields"]:
        if isinstance(avro_field["type"], list) and "null" in avro_field["type"]:
            assert avro_field["type"][0] == "null", "null first, so null can be the default"
            assert avro_field.get("default", "absent") is None


@pytest.mark.parametrize("component", list(Component))
def test_models_share_the_common_fields(component: Component) -> None:
    model = event_model(component)
    assert issubclass(model, LearningEvent)
    common = list(LearningEvent.model_fields)
    assert list(model.model_fields)[: len(common)] == common


def test_schema_dir_is_the_repos_events_folder() -> None:
    assert schema_dir().resolve() == _EVENTS_DIR


@pytest.mark.parametrize("component", list(Component))
def test_loaded_schema_is_the_file(component: Component) -> None:
    assert raw_schema(component) == _avsc(component)
    assert parsed_schema(component) == fastavro.parse_schema(_avsc(component))


@pytest.mark.parametrize("component", list(Component))
def test_cloudevent_type_round_trip(component: Component) -> None:
    assert cloudevent_type(component) == f"mastery.{component}.v1"
    assert component_of_type(cloudevent_type(component)) is component


@pytest.mark.parametrize(
    "ce_type",
    ["mastery.quiz", "quiz.v1", "mastery.quiz.v2", "mastery.QUIZ.v1", "mastery..v1", "", "x"],
)
def test_component_of_unknown_type(ce_type: str) -> None:
    assert component_of_type(ce_type) is None

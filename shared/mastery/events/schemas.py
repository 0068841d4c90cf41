"""The Avro schemas in ``events/*.avsc``: the single source of truth for event payloads."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import fastavro
import orjson

from mastery.domain import Component

__all__ = ["cloudevent_type", "component_of_type", "parsed_schema", "raw_schema", "schema_dir"]

_TYPE_PREFIX, _TYPE_SUFFIX = "mastery.", ".v1"


def schema_dir() -> Path:
    """Where the ``.avsc`` files are: inside the installed wheel, else the repo's ``events/``."""
    packaged = Path(__file__).with_name("avsc")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "events"


@functools.cache
def raw_schema(component: Component) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((schema_dir() / f"{component}.avsc").read_bytes())
    return loaded


@functools.cache
def parsed_schema(component: Component) -> Any:
    return fastavro.parse_schema(raw_schema(component))


def cloudevent_type(component: Component) -> str:
    """``mastery.<component>.v1``, the CloudEvent type of a component's events."""
    return f"{_TYPE_PREFIX}{component}{_TYPE_SUFFIX}"


_BY_TYPE = {cloudevent_type(c): c for c in Component}


def component_of_type(ce_type: str) -> Component | None:
    """The component a CloudEvent type names, ``None`` when it names none."""
    return _BY_TYPE.get(ce_type)

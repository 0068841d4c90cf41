"""Field types every wire format shares: ids and date-times of events, HTTP bodies, xAPI.

Apart from the models that use them, so a function that validates no event does not load
the event models.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, Field

__all__ = ["ID_PATTERN", "MAX_JSON_DEPTH", "EventId", "Rfc3339", "is_id", "too_deep"]

#: Ids end up inside Redis key names: no braces, colons or spaces, bounded length.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
EventId = Annotated[str, Field(pattern=ID_PATTERN)]
_ID = re.compile(ID_PATTERN)


def is_id(value: object) -> bool:
    """Whether ``value`` is an id as ``EventId`` validates it. Whole: Python's ``$`` (and so
    ``re.match``) would also take one trailing newline, which pydantic refuses."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339(value: object) -> object:
    """Only RFC 3339 text: pydantic alone would also take epoch numbers in a string."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-14T09:30:00Z")
    return value


#: How deep arrays and objects may nest in a JSON body or record (an xAPI extension is
#: free-form): orjson reads 1,024 levels but writes no more than 254, and a statement
#: is written again (its record, its derived id) after it is read.
MAX_JSON_DEPTH = 64


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON ``value`` nests arrays and objects deeper than ``limit``."""
    level: list[object] = [value]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return False
    return any(isinstance(node, dict | list) for node in level)


#: A date-time as the API documents it: RFC 3339 text with an offset, nothing else
#: (pydantic's ``AwareDatetime`` alone also takes a number, or a number in a string, as a
#: Unix time). Every date-time an event or a request body carries.
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]

"""Route keys ``"METHOD /path"`` whose path may hold ``{name}`` segments.

Shared by ``FunctionApp`` and the local gateway, so both read the registry's routes
the same way. A parameter matches one non-empty path segment; handlers validate it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Routes"]

T = TypeVar("T")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _pattern(path: str) -> re.Pattern[str]:
    parts: list[str] = []
    last = 0
    for m in _PARAM.finditer(path):
        parts += [re.escape(path[last : m.start()]), f"(?P<{m.group(1)}>[^/]+)"]
        last = m.end()
    parts.append(re.escape(path[last:]))
    return re.compile("^" + "".join(parts) + "$")


class Routes(Generic[T]):
    """``{"GET /batch/mastery/{batch_id}": value}``, matched against a method and a path."""

    def __init__(self, routes: Mapping[str, T]) -> None:
        self._exact: dict[tuple[str, str], tuple[str, T]] = {}
        self._templates: list[tuple[str, re.Pattern[str], str, T]] = []
        for key, value in routes.items():
            method, path = key.split(" ", 1)
            if _PARAM.search(path):
                self._templates.append((method, _pattern(path), key, value))
            else:
                self._exact[(method, path)] = (key, value)

    def match(self, method: str, path: str) -> tuple[str, T, dict[str, str]] | None:
        """(route key, value, path parameters), or ``None``."""
        exact = self._exact.get((method, path))
        if exact is not None:
            return exact[0], exact[1], {}
        for m, pattern, key, value in self._templates:
            found = pattern.fullmatch(path) if m == method else None
            if found:
                return key, value, found.groupdict()
        return None

    def methods(self, path: str) -> list[str]:
        """The methods of every route on ``path`` (a 405's ``Allow``)."""
        found = {m for (m, p) in self._exact if p == path}
        found |= {m for m, pattern, _, _ in self._templates if pattern.fullmatch(path)}
        return sorted(found)

    def serves(self, path: str) -> tuple[str, T] | None:
        """(route path, value) of a route on ``path`` with any method: 405 rather than 404."""
        for (_, p), (_, value) in self._exact.items():
            if p == path:
                return p, value
        for _, pattern, key, value in self._templates:
            if pattern.fullmatch(path):
                return key.split(" ", 1)[1], value
        return None

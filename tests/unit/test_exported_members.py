"""A guard on the public API: each module exports exactly the names meant.

Adding or removing an export is a decision; it shows up here as a one-line change.
"""

from __future__ import annotations

import importlib
import types

import pytest

_EXPECTED: dict[str, set[str]] = {
    "mastery.mcp": {
        "MCP_PATH",
        "TOKEN_ENV",
        "TOOLS",
        "Caller",
        "McpEndpoint",
        "ToolSpec",
        "call_tool",
        "list_tools",
        "mcp_server",
        "serve_stdio",
    },
    "mastery.domain": {
        "DEFAULT_FORECAST",
        "DEFAULT_MODEL",
        "Aggregate",
        "Bucket",
        "Component",
        "ComponentReport",
        "DayActivity",
        "DayMean",
        "DaySnapshot",
        "Forecast",
        "Granularity",
        "History",
        "Increment",
        "Level",
        "LineFit",
        "MasteryReport",
        "NextLevel",
        "Observation",
        "Prediction",
        "Priority",
        "Recommendation",
        "ScoringModel",
        "StudentState",
        "StudyAction",
        "Summary",
        "Trend",
        "day_activity",
        "day_mastery",
        "end_of_day",
        "explain",
        "fit_line",
        "fold",
        "mastery_history",
        "predict",
        "recommend",
    },
    "mastery.store": {
        "UNKNOWN_TENANT",
        "Applied",
        "AuditEntry",
        "Note",
        "OffsetBook",
        "Outcome",
        "RedisConnection",
        "RedisStore",
        "StatementRecord",
        "StudentDays",
        "Unapplied",
    },
    "mastery.web": set(),  # its modules, each imported by the functions that use it
    "mastery.events.codec": {"AVRO", "JSON", "decode", "encode"},
    "mastery.tracing": {
        "TRACE_HEADERS",
        "SpanKind",
        "answered",
        "configure",
        "context_of",
        "enabled",
        "extract_http",
        "failed",
        "inject_headers",
        "install",
        "name_route",
        "shutdown",
        "span",
        "trace_id",
        "wanted",
    },
}
_PACKAGES = ["mastery.domain", "mastery.store", "mastery.web", "mastery.mcp"]


@pytest.mark.parametrize("name", list(_EXPECTED))
def test_all_is_the_expected_set(name: str) -> None:
    module = importlib.import_module(name)
    assert len(module.__all__) == len(set(module.__all__)), f"{name}.__all__ repeats a name"
    assert set(module.__all__) == _EXPECTED[name]


@pytest.mark.parametrize("name", list(_EXPECTED))
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [member for member in module.__all__ if not hasattr(module, member)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("name", _PACKAGES)
def test_packages_import_only_what_they_export(name: str) -> None:
    # Like httpx's guard: a public name in a package's namespace is meant to be exported.
    package = importlib.import_module(name)
    public = {
        member
        for member, value in vars(package).items()
        if not member.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(package.__all__)

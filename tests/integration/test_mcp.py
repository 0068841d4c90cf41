"""The MCP function (``functions/mcp``) with the SDK's own client over Streamable HTTP.

In process over ASGI, against real Redis and Tansu: every tool, the caller's rights as
tool errors, 403 for a web page's foreign Origin and 401 before any MCP handling, the
access audit naming the acting agent, malformed requests answered in the engine's words.
The e2e test does the same through the gateway of the running dev stack.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import jsonschema
import jwt
import orjson
import pytest
from functions_framework.aio import create_asgi_app
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_NAME_HEADER, MCP_PROTOCOL_VERSION_HEADER
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PROTOCOL_VERSION_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types.version import LATEST_MODERN_VERSION, MODERN_PROTOCOL_VERSIONS
from prometheus_client import REGISTRY

from mastery.bootstrap import build, close_resources
from mastery.domain import Component
from mastery.mcp import Caller, call_tool
from mastery.policy import Role
from mastery.store import keys
from mastery.topics import AUDIT_TOPIC
from mastery.web.auth import Principal
from tests.conftest import JWT_SECRET
from tests.helpers import event_data, read_to_end, record, tool_problem
from tests.integration.conftest import FUNCTIONS_DIR

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    import mcp_types as types
    from redis.asyncio import Redis

    from mastery.bootstrap import Resources
    from mastery.settings import Settings

TOOLS = {
    "get_mastery",
    "predict_next_week",
    "recommend",
    "mastery_history",
    "compare_to_cohort",
    "find_students_at_risk",
}
NOW = datetime.now(UTC)
ALLOWED_ORIGIN = "https://tutor.example"  # the one web page this module's function allows
_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
_NOTIFY = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def bearer(sub: str, role: str, tenant: str, **claims: object) -> str:
    body = {"sub": sub, "role": role, "tenant": tenant, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
async def app(function_env: None) -> AsyncIterator[Any]:
    with pytest.MonkeyPatch.context() as env:  # read as the function's app is built
        env.setenv("MASTERY_MCP_ALLOWED_ORIGINS", f'["{ALLOWED_ORIGIN}"]')
        yield create_asgi_app(target="handler", source=str(FUNCTIONS_DIR / "mcp" / "main.py"))
        await close_resources()


@pytest.fixture
async def res(settings: Settings) -> AsyncIterator[Resources]:
    resources = build(settings, source="test")
    yield resources
    await resources.aclose()


@pytest.fixture
def session(app: Any) -> Callable[[str], AbstractAsyncContextManager[ClientSession]]:
    """Opens an initialized MCP client session presenting this token."""

    @contextlib.asynccontextmanager
    async def open_(token: str) -> AsyncIterator[ClientSession]:
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            headers={"authorization": f"Bearer {token}"},
        )
        async with (
            http,
            streamable_http_client("http://fn/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            yield s

    return open_


async def _events(
    res: Resources, tenant: str, student: str, score: float, days_ago: int = 0, cls: str = "c1"
) -> None:
    at = NOW - timedelta(days=days_ago, minutes=1)
    await res.ingestor.ingest(
        [record(c, event_data(tenant, student, score, at=at, class_id=cls)) for c in Component]
    )


async def _declining(res: Resources, tenant: str, student: str, base: float = 0.2) -> None:
    """Three weeks a little worse each day: flagged (forecast low and falling)."""
    for back in range(20, -1, -1):
        await _events(res, tenant, student, base + 0.03 * back, days_ago=back)


@pytest.fixture
async def school(res: Resources, tenant: str) -> str:
    """Class c1: s1 and s2 declining (s1 lower), five steady students; c2: s9."""
    await _declining(res, tenant, "s1", 0.15)
    await _declining(res, tenant, "s2", 0.25)
    for i in range(5):
        for back in (14, 7, 0):
            await _events(res, tenant, f"ok{i}", 0.8, days_ago=back)
    await _events(res, tenant, "s9", 0.5, cls="c2")
    return tenant


def _structured(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def _text(result: types.CallToolResult) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def test_lists_every_tool_with_schemas(
    session: Callable[[str], AbstractAsyncContextManager[ClientSession]], tenant: str
) -> None:
    async with session(bearer("a1", "admin", tenant)) as s:
        listed = (await s.list_tools()).tools
    assert {t.name for t in listed} == TOOLS
    for t in listed:
        assert t.input_schema["type"] == "object"
        # Model APIs refuse a tool whose input schema combines schemas at the top.
        assert not {"anyOf", "oneOf", "allOf"} & set(t.input_schema), t.name
        jsonschema.Draft202012Validator.check_schema(t.input_schema)
        assert t.output_schema is not None
        assert t.output_schema["type"] == "object"
        assert t.description
        assert len(t.description) > 150
        assert t.annotations is not None
        assert t.annotations.read_only_hint is True


async def test_every_tool_answers_with_structured_content_and_a_summary(
    session: Callable[[str], AbstractAsyncContextManager[ClientSession]], school: str
) -> None:
    async with session(bearer("a1", "admin", school)) as s:
        mastery = await s.call_tool("get_mastery", {"student_id": "ok0"})
        predicted = await s.call_tool("predict_next_week", {"student_id": "s1"})
        recs = await s.call_tool("recommend", {"student_id": "s1"})
        history = await s.call_tool(
            "mastery_history", {"student_id": "s1", "days": 30, "granularity": "week"}
        )
        compared = await s.call_tool(
            "compare_to_cohort", {"student_id": "ok0", "scope": "class", "class_id": "c1"}
        )
        risk = await s.call_tool("find_students_at_risk", {"limit": 5})

    m = _structured(mastery)
    assert (m["student_id"], m["mastery"], m["level"]) == ("ok0", 0.8, "proficient")
    assert m["components"]["quiz"]["observed"] is True
    assert "ok0: mastery 0.80 (proficient)" in _text(mastery)

    p = _structured(predicted)
    assert p["trend"] == "declining"
    assert p["intervention_needed"] is True
    assert p["days_with_data"] == 21
    assert "Intervention needed" in _text(predicted)

    r = _structured(recs)
    assert r["recommendations"]
    assert r["recommendations"][0]["priority"] == "high"
    assert "First:" in _text(recs)

    h = _structured(history)
    assert h["granularity"] == "week"
    assert len(h["mastery"]) in (5, 6)  # 30 days span 5 or 6 ISO weeks
    weeks = [m for m in h["mastery"] if m is not None]
    assert weeks == sorted(weeks, reverse=True)  # lower each week
    assert h["summary"]["change"] < 0
    assert h["trend"] == "declining"
    assert set(h) >= {"from", "to"}

    c = _structured(compared)
    assert (c["scope"], c["class_id"], c["cohort_size"]) == ("class", "c1", 7)
    assert c["cohort"]["mastery"]["percentile"] > 50
    assert "percentile" in _text(compared)

    k = _structured(risk)
    assert [s["student_id"] for s in k["students"]] == ["s1", "s2"]  # lowest predicted first
    assert (k["flagged"], k["checked"], k["complete"]) == (2, 8, True)
    assert _text(risk).startswith("2 of 8 students flagged")


async def test_at_risk_follows_the_batch_policy_and_reuses_cached_predictions(
    session: Callable[[str], AbstractAsyncContextManager[ClientSession]],
    school: str,
    redis: Redis,
) -> None:
    async with session(bearer("t1", "teacher", school, classes=["c1"])) as s:
        mine = await s.call_tool("find_students_at_risk", {})
        other = await s.call_tool("find_students_at_risk", {"class_id": "c2"})
    assert [x["student_id"] for x in _structured(mine)["students"]] == ["s1", "s2"]
    assert _structured(mine)["checked"] == 7  # c1 only: s9 is in c2
    assert other.is_error
    assert "403" in _text(other)
    cached = await redis.get(keys.prediction(school, "s1"))
    assert cached is not None  # computed once, cached for predict_next_week and the next scan
    async with session(bearer("a1", "admin", school)) as s:
        again = await s.call_tool("predict_next_week", {"student_id": "s1"})
    assert not again.is_error
    assert orjson.loads(cached)["doc"]["version"] == 21 * 4
    assert orjson.loads(cached)["stamp"].startswith(f"{21 * 4}@")

    async with session(bearer("s1", "student", school)) as s:
        refused = await s.call_tool("find_students_at_risk", {"class_id": "c1"})
    assert refused.is_error
    assert "Error 403" in _text(refused)
    assert "s2" not in _text(refused)


@pytest.mark.parametrize(
    ("role", "target", "status"),
    [
        (Role.STUDENT, "s1", None),
        (Role.STUDENT, "s2", 403),  # another student's data
        (Role.TEACHER, "s9", 403),  # outside the teacher's classes
        (Role.TEACHER, "s2", None),
        (Role.ADMIN, "nobody", 404),  # no data in the caller's tenant
    ],
)
async def test_rights_are_tool_errors_that_leak_nothing(
    session: Callable[[str], AbstractAsyncContextManager[ClientSession]],
    school: str,
    role: Role,
    target: str,
    status: int | None,
) -> None:
    sub = {Role.STUDENT: "s1", Role.TEACHER: "t1", Role.ADMIN: "a1"}[role]
    async with session(bearer(sub, role.value, school, classes=["c1"])) as s:
        for tool in ("get_mastery", "predict_next_week", "recommend", "mastery_history"):
            result = await s.call_tool(tool, {"student_id": target})
            if status is None:
                assert _structured(result)["student_id"] == target
                continue
            assert result.is_error
            assert _text(result).startswith(f"Error {status} ")
            assert result.structured_content is None
            error = tool_problem(result)
            assert error["status"] == status
            assert "mastery" not in error
            assert "components" not in error


async def test_invalid_arguments_are_422_naming_them(
    session: Callable[[str], AbstractAsyncContextManager[ClientSession]], school: str
) -> None:
    async with session(bearer("a1", "admin", school)) as s:
        bad_days = await s.call_tool("mastery_history", {"student_id": "s1", "days": 500})
        bad_id = await s.call_tool("get_mastery", {"student_id": "x:y"})
        extra = await s.call_tool("recommend", {"student_id": "s1", "tenant": "other"})
    assert bad_days.is_error
    assert _text(bad_days).startswith("Error 422 ")
    assert "days" in _text(bad_days)
    assert bad_id.is_error
    assert "student_id" in _text(bad_id)
    assert extra.is_error
    assert "tenant" in _text(extra)


async def test_an_unknown_tool_is_a_jsonrpc_error_once_audited(
    session: Callable[[str], AbstractAsyncContextManager[ClientSession]],
    app: Any,
    settings: Settings,
    school: str,
) -> None:
    """The protocol's answer to an unknown tool is INVALID_PARAMS, not a tool result; the
    call is still an access, audited before the answer."""
    async with session(bearer("a1", "admin", school, act={"sub": "probe-bot"})) as s:
        with pytest.raises(MCPError) as caught:
            await s.call_tool("drop_tables", {})
    assert caught.value.code == INVALID_PARAMS
    assert "drop_tables" in caught.value.message

    headers, body = _modern(school, "tools/call")
    body["params"] |= {"name": "drop_tables", "arguments": {}}
    headers[MCP_NAME_HEADER] = "drop_tables"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        resp = await c.post("/mcp", json=body, headers=headers)
    assert resp.status_code == 400  # the 2026-07-28 transport's status for INVALID_PARAMS
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == INVALID_PARAMS

    records = [orjson.loads(m.value() or b"{}") for m in read_to_end(settings, AUDIT_TOPIC)]
    mine = [r for r in records if r.get("function") == "mcp" and r.get("tenant") == school]
    assert [(r["route"], r["subject"], r["outcome"]) for r in mine] == [
        ("tools/call ?", "a1", "not_found")
    ] * 2
    assert mine[0]["actor"] == "probe-bot"


async def test_error_results_conform_to_the_tools_output_schema(
    session: Callable[[str], AbstractAsyncContextManager[ClientSession]], school: str
) -> None:
    """A client validates structured content against the tool's ``outputSchema`` even on
    ``isError``: an error carries none (or a conforming one), its problem is in the text."""
    calls: list[tuple[str, dict[str, Any], int]] = [
        *[(t, {"student_id": "s2"}, 403) for t in TOOLS - {"find_students_at_risk"}],
        ("find_students_at_risk", {"class_id": "c1"}, 403),
        *[(t, {"student_id": "s1", "nope": 1}, 422) for t in TOOLS - {"find_students_at_risk"}],
        ("find_students_at_risk", {"limit": 0}, 422),
        # The rule the inputSchema leaves to the description: class_id with scope class only.
        ("compare_to_cohort", {"student_id": "s1", "class_id": "c1"}, 422),
    ]
    async with session(bearer("s1", "student", school)) as s:
        schemas = {t.name: t.output_schema for t in (await s.list_tools()).tools}
        results = [(await s.call_tool(name, args), status) for name, args, status in calls]
    for (name, _, _), (result, status) in zip(calls, results, strict=True):
        assert result.is_error, (name, result.content)
        if result.structured_content is not None:
            jsonschema.validate(result.structured_content, schemas[name] or {})
        problem = tool_problem(result)
        assert problem["status"] == status
        assert _text(result).startswith(f"Error {status} {problem['title']}: {problem['detail']}")
        assert problem["correlation_id"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-jwt", "Basic czE6cw==", "forged"],
)
async def test_no_or_bad_token_is_401_problem_before_mcp(
    app: Any, school: str, authorization: str | None
) -> None:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    if authorization == "forged":
        claims = {"sub": "a1", "role": "admin", "tenant": school, "exp": int(time.time()) + 60}
        authorization = f"Bearer {jwt.encode(claims, 'k' * 40, algorithm='HS256')}"
    if authorization:
        headers["authorization"] = authorization
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        resp = await c.post("/mcp", json=body, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "tools" not in resp.text


def _access(settings: Settings, correlation_id: str) -> list[dict[str, Any]]:
    """The access records of one request, by its correlation id."""
    records = [orjson.loads(m.value() or b"{}") for m in read_to_end(settings, AUDIT_TOPIC)]
    return [r for r in records if r.get("correlation_id") == correlation_id]


_FOREIGN = [
    "https://evil.example",
    "null",  # a sandboxed frame, a file
    "http://tutor.example",  # another scheme: another origin
    "https://tutor.example:8443",
    "https://tutor.example.evil.example",
]


@pytest.mark.parametrize("origin", _FOREIGN)
async def test_a_foreign_origin_is_403_problem_audited_before_any_mcp_handling(
    app: Any, settings: Settings, tenant: str, origin: str
) -> None:
    """DNS rebinding: a page of another site calls /mcp from the user's browser. Refused
    whatever it carries: no tool runs, and the refusal is audited, naming the caller when
    the token does (the record reaches the tenant's audit); without one, 403 still."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        headers, body = _modern(tenant, "tools/call")
        body["params"] |= {"name": "get_mastery", "arguments": {"student_id": "s1"}}
        cid = uuid.uuid4().hex
        signed = await c.post(
            "/mcp",
            json=body,
            headers={
                **headers,
                MCP_NAME_HEADER: "get_mastery",
                "origin": origin,
                "x-correlation-id": cid,
            },
        )
        anonymous_cid = uuid.uuid4().hex
        del headers["authorization"]
        anonymous = await c.post(
            "/mcp",
            json=body,
            headers={**headers, "origin": origin, "x-correlation-id": anonymous_cid},
        )
    for resp in (signed, anonymous):
        assert resp.status_code == 403
        assert resp.headers["content-type"] == "application/problem+json"
        problem = resp.json()
        assert set(problem) == {"type", "title", "status", "detail", "correlation_id"}
        assert (problem["status"], problem["title"]) == (403, "Forbidden")
        assert problem["detail"] == "requests from this Origin are not allowed"
    assert [
        (r["route"], r["subject"], r["actor"], r["tenant"], r["outcome"], r["status"])
        for r in _access(settings, cid)
    ] == [("POST /mcp", "a1", None, tenant, "denied", 403)]  # no tools/call record
    assert [
        (r["route"], r["subject"], r["tenant"], r["outcome"])
        for r in _access(settings, anonymous_cid)
    ] == [("POST /mcp", None, None, "denied")]


@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, "https://Tutor.Example", None])
async def test_an_allowed_origin_or_none_is_served_where_another_is_refused(
    app: Any, school: str, origin: str | None
) -> None:
    """The SDK's client from the allowed page (host names are case-insensitive), or with no
    Origin at all as agents, CLIs and servers send; the same call from another is 403."""
    token = bearer("a1", "admin", school)
    answers: dict[str | None, Any] = {}
    for sent in (origin, "https://evil.example"):
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            headers={"authorization": f"Bearer {token}", **({"origin": sent} if sent else {})},
        )
        try:
            async with (
                http,
                streamable_http_client("http://fn/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as s,
            ):
                await s.initialize()
                answers[sent] = await s.call_tool("get_mastery", {"student_id": "ok0"})
        except ExceptionGroup as caught:  # the SDK's task groups wrap its MCPError
            answers[sent] = caught
    assert _structured(answers[origin])["student_id"] == "ok0"
    refused = answers["https://evil.example"]
    assert isinstance(refused, ExceptionGroup)
    assert "error response" in repr(refused)


async def test_the_sdk_client_without_a_token_cannot_even_initialize(app: Any) -> None:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    with pytest.raises(ExceptionGroup) as caught:  # the SDK's task groups wrap its MCPError
        async with (
            http,
            streamable_http_client("http://fn/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
    assert "error response" in repr(caught.value)


async def test_the_audit_names_the_agent_acting_for_the_user(
    session: Callable[[str], AbstractAsyncContextManager[ClientSession]],
    app: Any,
    settings: Settings,
    school: str,
) -> None:
    delegated = bearer("s1", "student", school, act={"sub": "tutor-bot"})
    async with session(delegated) as s:
        ok = await s.call_tool("get_mastery", {"student_id": "s1"})
        denied = await s.call_tool("get_mastery", {"student_id": "s2"})
    assert not ok.is_error
    assert denied.is_error
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        await c.post("/mcp", json={}, headers={"authorization": "Bearer nope"})
    records = [orjson.loads(m.value() or b"{}") for m in read_to_end(settings, AUDIT_TOPIC)]
    mine = [r for r in records if r.get("function") == "mcp" and r.get("tenant") == school]
    assert sorted(
        (r["route"], r["subject"], r["actor"], r["students"], r["outcome"]) for r in mine
    ) == [
        ("tools/call get_mastery", "s1", "tutor-bot", ["s1"], "allowed"),
        ("tools/call get_mastery", "s1", "tutor-bot", ["s2"], "denied"),
    ]
    unauthenticated = [
        r for r in records if r.get("function") == "mcp" and r["outcome"] == "unauthenticated"
    ]
    assert unauthenticated
    assert unauthenticated[-1]["route"] == "POST /mcp"


async def test_stdio_serves_the_same_tools_as_the_token_in_the_environment(
    settings: Settings, school: str, tmp_path: Path
) -> None:
    env = {
        "REDIS_URL": settings.redis_url,
        "MASTERY_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MASTERY_JWT_SECRET": JWT_SECRET,
        "MASTERY_MCP_TOKEN": bearer("s1", "student", school, act={"sub": "desk-agent"}),
    }
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "mastery.cli", "mcp", "--stdio"], env=env
    )
    with (tmp_path / "stderr").open("w") as errlog:
        async with (
            stdio_client(server, errlog=errlog) as (read, write),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            assert {t.name for t in (await s.list_tools()).tools} == TOOLS
            own = await s.call_tool("get_mastery", {"student_id": "s1"})
            other = await s.call_tool("get_mastery", {"student_id": "s2"})
    assert _structured(own)["student_id"] == "s1"
    assert other.is_error
    assert _text(other).startswith("Error 403 ")

    bad = subprocess.run(
        [sys.executable, "-m", "mastery.cli", "mcp", "--stdio"],
        env={**os.environ, **env, "MASTERY_MCP_TOKEN": "forged"},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode == 1
    assert "MASTERY_MCP_TOKEN: invalid token" in bad.stderr


async def test_tool_calls_share_the_callers_http_rate_limit(
    settings: Settings, school: str
) -> None:
    res = build(settings.model_copy(update={"rate_limit_student": 2}), source="test")
    caller = Caller(res, Principal("s1", Role.STUDENT, school), "rl")
    try:
        answers = [await call_tool(caller, "get_mastery", {"student_id": "s1"}) for _ in range(3)]
    finally:
        await res.aclose()
    assert [a.is_error for a in answers] == [False, False, True]
    assert _text(answers[2]).startswith("Error 429 Too Many Requests: rate limit of 2")


def _tool_calls(tool: str, status: int) -> float:
    labels = {"tool": tool, "status": str(status)}
    return REGISTRY.get_sample_value("mastery_mcp_tool_calls_total", labels) or 0.0


async def test_tool_calls_are_counted_by_the_status_their_result_stands_for(
    redis_down: Resources, tenant: str
) -> None:
    """A failed call answers inside HTTP 200 (``isError``): only this count shows it."""
    caller = Caller(redis_down, Principal("a1", Role.ADMIN, tenant), "down")
    before = {key: _tool_calls(*key) for key in [("get_mastery", 503), ("?", 404)]}
    failed = await call_tool(caller, "get_mastery", {"student_id": "s1"})
    with pytest.raises(MCPError):
        await call_tool(caller, "drop_tables", {})
    assert tool_problem(failed)["status"] == 503
    assert {key: _tool_calls(*key) - n for key, n in before.items()} == {
        ("get_mastery", 503): 1.0,
        ("?", 404): 1.0,
    }


async def test_a_body_over_the_limit_is_413_problem(app: Any, tenant: str) -> None:
    headers = {
        "authorization": f"Bearer {bearer('a1', 'admin', tenant)}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": "y" * 70_000}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        resp = await c.post("/mcp", json=body, headers=headers)
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["x-correlation-id"]


@pytest.mark.parametrize(
    ("accept", "body", "status"),
    [
        ("application/json, text/event-stream", _LIST, 200),
        ("application/json, text/event-stream", _NOTIFY, 202),
        ("text/html", _LIST, 406),  # refused by the SDK's transport
    ],
)
async def test_request_metrics_count_the_status_actually_sent(
    app: Any, tenant: str, accept: str, body: dict[str, Any], status: int
) -> None:
    labels = {"function": "mcp", "route": "POST /mcp", "method": "POST", "status": str(status)}

    def count() -> float:
        return REGISTRY.get_sample_value("mastery_requests_total", labels) or 0.0

    before = count()
    headers = {"authorization": f"Bearer {bearer('a1', 'admin', tenant)}", "accept": accept}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        resp = await c.post("/mcp", json=body, headers=headers)
    assert resp.status_code == status
    assert resp.headers["x-correlation-id"]
    assert count() == before + 1


def _modern(
    tenant: str, method: str, version: str = LATEST_MODERN_VERSION, accept: str = "application/json"
) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and body of one request of the stateless protocol (no handshake)."""
    headers = {
        "authorization": f"Bearer {bearer('a1', 'admin', tenant)}",
        "accept": accept,
        MCP_PROTOCOL_VERSION_HEADER: version,
        MCP_METHOD_HEADER: method,
    }
    meta = {PROTOCOL_VERSION_META_KEY: version, CLIENT_CAPABILITIES_META_KEY: {}}
    return headers, {"jsonrpc": "2.0", "id": 7, "method": method, "params": {"_meta": meta}}


def _requests(status: int) -> float:
    labels = {"function": "mcp", "route": "POST /mcp", "method": "POST", "status": str(status)}
    return REGISTRY.get_sample_value("mastery_requests_total", labels) or 0.0


@pytest.mark.parametrize(
    ("method", "version", "status", "code"),
    [
        ("no/such/method", LATEST_MODERN_VERSION, 404, METHOD_NOT_FOUND),
        ("tools/list", "2099-01-01", 400, UNSUPPORTED_PROTOCOL_VERSION),
    ],
)
async def test_jsonrpc_errors_of_the_transport_go_out_as_the_sdk_wrote_them(
    app: Any, tenant: str, method: str, version: str, status: int, code: int
) -> None:
    """A client reads a JSON-RPC error's code (and the versions supported): not a problem."""
    headers, body = _modern(tenant, method, version)
    before = _requests(status)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        resp = await c.post("/mcp", json=body, headers=headers)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-correlation-id"]
    answer = resp.json()
    assert (answer["jsonrpc"], answer["id"], answer["error"]["code"]) == ("2.0", 7, code)
    if code == UNSUPPORTED_PROTOCOL_VERSION:
        assert answer["error"]["data"]["supported"] == list(MODERN_PROTOCOL_VERSIONS)
    assert _requests(status) == before + 1


@pytest.mark.parametrize(
    ("accept", "content_type", "status"),
    [
        ("text/html", "application/json", 406),  # the SDK answers it without a body
        ("application/json", "text/plain", 400),  # the SDK answers it in plain text
    ],
)
async def test_refusals_without_a_jsonrpc_error_are_problems(
    app: Any, tenant: str, accept: str, content_type: str, status: int
) -> None:
    headers, body = _modern(tenant, "tools/list", accept=accept)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        resp = await c.post(
            "/mcp", content=orjson.dumps(body), headers={**headers, "content-type": content_type}
        )
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == status
    assert resp.headers["x-correlation-id"]


_MARKER = "marker-0f3c"  # a value of the request's: never echoed back
_LIBRARY_TEXT = ("pydantic", "validation error", "for further information", "input_value", "[type=")


def _legacy(tenant: str, method: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and body of one request of the protocol with a handshake (2025-11-25 and
    before), as the SDK's stateless JSON server takes it: no session, no version header."""
    headers = {
        "authorization": f"Bearer {bearer('a1', 'admin', tenant)}",
        "accept": "application/json, text/event-stream",
    }
    return headers, {"jsonrpc": "2.0", "id": 7, "method": method, "params": {}}


def _call(body: dict[str, Any], **params: object) -> dict[str, Any]:
    return body | {"params": body["params"] | params}


def _without_jsonrpc(body: dict[str, Any]) -> dict[str, Any]:
    call = _call(body, name="get_mastery", arguments={"student_id": _MARKER})
    return {k: v for k, v in call.items() if k != "jsonrpc"}


# (the request made malformed, the member the answer names, the id it answers)
_MALFORMED = [
    pytest.param(
        lambda b: _call(b, name="get_mastery", arguments=_MARKER),
        "params.arguments",
        7,
        id="arguments-not-an-object",
    ),
    pytest.param(
        lambda b: _call(b, arguments={"student_id": _MARKER}), "params.name", 7, id="no-tool-name"
    ),
    pytest.param(_without_jsonrpc, "jsonrpc", None, id="no-jsonrpc-member"),
    pytest.param(lambda b: b | {"params": [_MARKER]}, "params", None, id="params-not-an-object"),
    pytest.param(lambda b: [_call(b, name=_MARKER)], "body", None, id="a-batch"),
]


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize(("malformed", "field", "answer_id"), _MALFORMED)
async def test_a_malformed_request_is_a_jsonrpc_error_naming_what_is_wrong(
    app: Any,
    tenant: str,
    era: str,
    malformed: Callable[[dict[str, Any]], object],
    field: str,
    answer_id: int | None,
) -> None:
    """The JSON-RPC error the SDK chose (its code, its status), worded by the engine: the
    member at fault and why, as the other endpoints word a 422, never the validation
    library's text (its version, its links, the values it was given)."""
    legacy = era == "legacy"
    headers, body = _legacy(tenant, "tools/call") if legacy else _modern(tenant, "tools/call")
    if not legacy:
        headers[MCP_NAME_HEADER] = "get_mastery"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        resp = await c.post("/mcp", json=malformed(body), headers=headers)
    assert resp.headers["content-type"] == "application/json"
    answer = resp.json()
    error = answer["error"]
    assert (answer["jsonrpc"], answer["id"]) == ("2.0", answer_id)
    assert error["code"] in (INVALID_PARAMS, INVALID_REQUEST)
    [wrong] = error["data"]["errors"]
    assert wrong["field"] == field
    kind = "invalid params" if field.startswith("params.") else "invalid request"
    assert error["message"] == f"{kind}: {field}: {wrong['message']}"
    assert _MARKER not in resp.text
    assert not any(text in resp.text.lower() for text in _LIBRARY_TEXT), resp.text


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_a_body_that_is_not_json_is_a_parse_error_in_the_engines_words(
    app: Any, tenant: str, era: str
) -> None:
    headers, _ = _modern(tenant, "tools/list") if era == "modern" else _legacy(tenant, "tools/list")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as c:
        resp = await c.post(
            "/mcp",
            content=b'{"jsonrpc": "2.0", "id": 7, "method": "tools/list", ',
            headers={**headers, "content-type": "application/json"},
        )
    assert resp.status_code == 400
    assert resp.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": PARSE_ERROR, "message": "Parse error: the body is not valid JSON"},
    }

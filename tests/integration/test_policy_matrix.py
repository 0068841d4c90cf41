"""Every HTTP function in the registry enforces ``mastery.policy`` for every role.

Generated from ``mastery.registry.FUNCTIONS``: a new function with an ``action`` joins
the matrix by itself, and one without an ``action`` fails here. For a tenant-wide action
(``TENANT_WIDE``) the student in the body only narrows the answer: the role decides.
Every route that takes students in its body is walked (routes with a ``{parameter}``
address something else, e.g. a batch; their own tests cover who may read it). A
function whose body names a list of students (``students_field`` ends in "s") is sent a
list of one: the caller's role decides the request, the table decides that student's
result in it. The MCP function is walked through its ``get_mastery`` tool with the SDK's
client (one ``POST /mcp`` a call); a refusal there is a tool error carrying the status.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import jwt
import pytest
from functions_framework.aio import create_asgi_app
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mastery.bootstrap import build
from mastery.domain import Component
from mastery.policy import POLICY, TENANT_WIDE, Action, Role, Scope, allowed, may_act, may_try
from mastery.registry import FUNCTIONS
from mastery.web.query import query_mastery
from tests.conftest import JWT_SECRET
from tests.helpers import event_data, record, tool_problem, xapi_statement
from tests.integration.conftest import FUNCTIONS_DIR, serve

if TYPE_CHECKING:
    from mastery.registry import FunctionSpec
    from mastery.settings import Settings

HTTP_FUNCTIONS = [f for f in FUNCTIONS if f.routes]
SUBJECT = {Role.STUDENT: "s-self", Role.TEACHER: "t-1", Role.ADMIN: "a-1"}
TEACHER_CLASSES = frozenset({"c-mine"})
# target student -> its classes, in the caller's tenant ("s-ghost" lives in another tenant)
STUDENTS = {"s-self": {"c-mine"}, "s-classmate": {"c-mine"}, "s-stranger": {"c-other"}}
TARGETS = [*STUDENTS, "s-ghost"]


def test_the_policy_is_the_spec() -> None:
    """Changing who may read whom is a decision: it shows up here as a one-line change."""
    assert {action: dict(scopes) for action, scopes in POLICY.items()} == {
        Action.READ: {
            Role.STUDENT: Scope.SELF,
            Role.TEACHER: Scope.CLASSES,
            Role.ADMIN: Scope.TENANT,
        },
        Action.EXPORT: {
            Role.STUDENT: Scope.SELF,
            Role.TEACHER: Scope.NONE,
            Role.ADMIN: Scope.TENANT,
        },
        Action.ERASE: {
            Role.STUDENT: Scope.NONE,
            Role.TEACHER: Scope.NONE,
            Role.ADMIN: Scope.TENANT,
        },
        Action.AUDIT: {
            Role.STUDENT: Scope.NONE,
            Role.TEACHER: Scope.NONE,
            Role.ADMIN: Scope.TENANT,
        },
        Action.BATCH: {
            Role.STUDENT: Scope.NONE,
            Role.TEACHER: Scope.CLASSES,
            Role.ADMIN: Scope.TENANT,
        },
        Action.INGEST: {
            Role.STUDENT: Scope.NONE,
            Role.TEACHER: Scope.NONE,
            Role.ADMIN: Scope.TENANT,
        },
    }
    assert set(TENANT_WIDE) == {Action.AUDIT, Action.INGEST}
    for action in TENANT_WIDE:  # a scope narrower than the tenant means nothing there
        assert set(POLICY[action].values()) <= {Scope.NONE, Scope.TENANT}


@pytest.mark.parametrize("spec", HTTP_FUNCTIONS, ids=lambda s: s.name)
def test_every_http_function_declares_its_action(spec: FunctionSpec) -> None:
    assert spec.action is not None, f"{spec.name} must say what it does in mastery.registry"


async def _seed(settings: Settings) -> tuple[str, str]:
    """Two fresh tenants: the caller's, holding ``STUDENTS``, and one holding "s-ghost"."""
    mine, other = f"pm-{time.time_ns()}", f"pm-other-{time.time_ns()}"
    res = build(settings, source="test")
    events = [
        record(Component.QUIZ, event_data(mine, s, class_id=sorted(c)[0]))
        for s, c in STUDENTS.items()
    ]
    events.append(record(Component.QUIZ, event_data(other, "s-ghost", class_id="c-mine")))
    await res.ingestor.ingest(events)
    # the other tenant's access trail holds a record too, which no one here may see
    async with serve("mastery-query", {"POST /mastery/query": query_mastery}, res) as query:
        claims = {"sub": "a-1", "role": "admin", "tenant": other, "exp": int(time.time()) + 300}
        auth = {"authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}
        resp = await query.post("/mastery/query", json={"student_id": "s-ghost"}, headers=auth)
        assert resp.status_code == 200
    await res.aclose()
    return mine, other


@pytest.fixture(scope="module")
async def tenants(settings: Settings) -> tuple[str, str]:
    return await _seed(settings)


def _expected(role: Role, action: Action, target: str) -> int:
    subject = SUBJECT[role]
    if action in TENANT_WIDE:
        return 200 if may_try(role, subject, action, None) else 403
    if not may_try(role, subject, action, target):
        return 403  # refused before any data is read, whether the student exists or not
    if action is Action.ERASE:
        return 200  # erasing is idempotent: nothing held is nothing to erase
    if target not in STUDENTS:
        return 404  # another tenant's student is, for this caller, no student at all
    classes = TEACHER_CLASSES if role is Role.TEACHER else frozenset()
    ok = allowed(role, subject, classes, action, target, STUDENTS[target])
    return 200 if ok else 403


CASES = [
    (spec, route, role, target)
    for spec in HTTP_FUNCTIONS
    for route in spec.routes
    if "{" not in route and route not in spec.public
    for role, target in itertools.product(Role, TARGETS)
]
_ERRORS = {403: "forbidden", 404: "not_found"}


async def _mcp_get_mastery(
    app: Any, path: str, headers: dict[str, str], target: str
) -> tuple[int, str, dict[str, Any]]:
    """(status, whole answer, structured content) of the ``get_mastery`` tool."""
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), headers=headers)
    async with (
        http,
        streamable_http_client(f"http://fn{path}", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("get_mastery", {"student_id": target})
    doc = result.structured_content or {}
    text = result.model_dump_json()
    return (tool_problem(result)["status"] if result.is_error else 200), text, doc


def _is_list(spec: FunctionSpec) -> bool:
    return spec.students_field.endswith("s")


@pytest.mark.parametrize(
    ("spec", "route", "role", "target"),
    CASES,
    # The method too where a function has several routes (xAPI: POST and PUT).
    ids=[
        f"{s.name}{'-' + route.split()[0] if len(s.routes) > 1 else ''}-{r.value}-{t}"
        for s, route, r, t in CASES
    ],
)
async def test_role_x_function_matrix(
    function_env: None,
    tenants: tuple[str, str],
    settings: Settings,
    spec: FunctionSpec,
    route: str,
    role: Role,
    target: str,
) -> None:
    destructive = spec.action is Action.ERASE
    # Erasing and ingesting change the tenant's students: each case gets tenants of its own.
    writes = destructive or spec.action is Action.INGEST
    mine, other = await _seed(settings) if writes else tenants
    method, path = route.split(" ", 1)
    claims: dict[str, object] = {
        "sub": SUBJECT[role],
        "role": role.value,
        "tenant": mine,
        "exp": int(time.time()) + 300,
    }
    if role is Role.TEACHER:
        claims["classes"] = sorted(TEACHER_CLASSES)
    headers = {"authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}
    app = create_asgi_app(target="handler", source=str(FUNCTIONS_DIR / spec.directory / "main.py"))
    if spec.protocol == "mcp":
        status, text, doc = await _mcp_get_mastery(app, path, headers, target)
        assert spec.action is not None
        assert status == _expected(role, spec.action, target), text
        assert other not in text
        assert "s-ghost" not in text or target == "s-ghost"
        assert status != 200 or doc["student_id"] == target
        return
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
        field = spec.students_field
        body: Any = {**spec.fixed_fields, field: [target] if _is_list(spec) else target}
        params = {}
        if spec.protocol == "xapi":  # a statement about the target student
            body = xapi_statement(target)
            headers["x-experience-api-version"] = "1.0.3"
            if method == "PUT":  # stored under the id the parameter names
                params = {"statementId": body["id"]}
        resp = await client.request(method, path, json=body, headers=headers, params=params)

    assert spec.action is not None
    expected = _expected(role, spec.action, target)
    assert other not in resp.text
    assert "s-ghost" not in resp.text or target == "s-ghost"
    if _is_list(spec):
        assert resp.status_code == (200 if may_act(role, spec.action) else 403), resp.text
        if resp.status_code == 200:
            [result] = resp.json()["results"]
            assert result["student_id"] == target
            assert result.get("error") == _ERRORS.get(expected), result
            assert ("result" in result) == (expected == 200)
            assert resp.json()["tenant"] == mine
        return
    # A PUT of a statement answers 204 No Content where a POST answers 200 and its id.
    stored = 204 if (spec.protocol, method) == ("xapi", "PUT") else 200
    assert resp.status_code == (stored if expected == 200 else expected), resp.text
    if resp.status_code >= 400:
        assert resp.headers["content-type"] == "application/problem+json"
    elif spec.protocol == "xapi":  # the statement's id; it was applied in the caller's tenant
        if method == "POST":
            assert resp.json() == [body["id"]]
        else:
            assert resp.content == b""
        res = build(settings, source="test")
        try:
            assert await res.store.load(mine, target) is not None
        finally:
            await res.aclose()
    else:
        doc = resp.json()
        if "intent" in doc:  # /process: the envelope carries the operation's own answer
            assert doc["error"] is None
            doc = doc["result"]
        assert doc["tenant"] == mine
        if spec.action in TENANT_WIDE:  # records of the caller's tenant, about the target only
            assert doc["records"] or target not in STUDENTS
            for r in doc["records"]:
                access = r["kind"] == "access"
                assert (r["tenant"] if access else r["event"]["tenant"]) == mine
                assert target in (r["students"] if access else [r["event"]["student_id"]])
        else:
            assert doc["student_id"] == target
    if destructive:
        res = build(settings, source="test")
        try:
            assert await res.store.load(other, "s-ghost") is not None  # another tenant's: intact
            gone = await res.store.load(mine, target) is None
            assert gone == (resp.status_code == 200 or target not in STUDENTS)
        finally:
            await res.aclose()

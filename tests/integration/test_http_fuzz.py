"""Property-based HTTP fuzzing of every function in the registry: no input gives a 5xx.

Hypothesis plays the part schemathesis would: arbitrary bodies, content types, tokens
(valid, forged, with odd claims) and paths against the real functions, Redis and broker.
"""

from __future__ import annotations

import string
import time
from datetime import UTC
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import orjson
import pytest
from functions_framework.aio import create_asgi_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mastery.mcp import MCP_PATH
from mastery.registry import FUNCTIONS
from tests.conftest import JWT_SECRET
from tests.integration.conftest import FUNCTIONS_DIR

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mastery.registry import FunctionSpec

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_ids = st.sampled_from(["s1", "t-1", "", "a" * 65, "x:y", "{t}", "ü", "s 1"]) | st.text(max_size=70)
_BATCH = st.fixed_dictionaries(
    {"student_ids": st.lists(_ids, max_size=5) | _json},
    optional={
        "priority": st.sampled_from(["high", "normal", "low", "x"]) | _json,
        "async": st.booleans() | _json,
        "deadline_s": st.integers(-5, 100_000) | _json,
    },
).map(orjson.dumps)
_audit_queries = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["access", "events", "all", "x"]) | _json,
        "limit": st.integers(-5, 1005) | _json,
        "student_id": _ids,
        "since": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "now", ""])
        | st.datetimes(timezones=st.sampled_from([None, UTC])).map(lambda d: d.isoformat())
        | st.integers(-(2**63), 2**63 - 1),
    },
)
_history_options = st.fixed_dictionaries(
    {},
    optional={
        "days": st.integers(-(2**63), 2**63 - 1) | st.sampled_from([7, 90, 30.5, "30", None]),
        "granularity": st.sampled_from(["day", "week", "month", "hour", "", 1]),
        "format": st.sampled_from(["json", "csv", "ndjson", "xml", None]),
    },
)
_bodies = (
    st.builds(lambda sid: orjson.dumps({"student_id": sid}), _ids)
    | _audit_queries.map(orjson.dumps)
    | st.builds(lambda sid, opts: orjson.dumps({"student_id": sid, **opts}), _ids, _history_options)
    | _BATCH
    | _json.map(orjson.dumps)
    | st.binary(max_size=300)
)
_claims = st.fixed_dictionaries(
    {
        "sub": _ids,
        "role": st.sampled_from(["student", "teacher", "admin", "root", ""]),
        "tenant": _ids,
    },
    optional={
        "classes": st.lists(_ids, max_size=3) | _json,
        "exp": st.integers(),
        "nbf": st.integers(),
    },
)


@st.composite
def _authorization(draw: st.DrawFn) -> dict[str, str]:
    kind = draw(st.sampled_from(["none", "valid", "claims", "garbage", "wrong-key"]))
    if kind == "none":
        return {}
    if kind == "garbage":
        return {"authorization": draw(st.text(max_size=60).map(lambda t: f"Bearer {t}"))}
    claims: dict[str, Any] = draw(_claims)
    if kind == "valid":
        claims |= {
            "role": draw(st.sampled_from(["student", "teacher", "admin"])),
            "exp": int(time.time()) + 600,
        }
    key = JWT_SECRET if kind != "wrong-key" else "k" * 40
    try:
        token = jwt.encode(claims, key, algorithm="HS256")
    except (TypeError, ValueError):  # claims PyJWT itself refuses to encode
        return {}
    return {"authorization": f"Bearer {token}"}


_ce_headers = st.fixed_dictionaries(
    {},
    optional={
        "ce-id": st.text(max_size=140),
        "ce-type": st.sampled_from(["mastery.quiz.v1", "mastery.completion.v1", "x"])
        | st.text(max_size=20),
        "ce-source": st.text(max_size=20),
        "ce-specversion": st.sampled_from(["1.0", "0.3", ""]),
        "x-topic": st.sampled_from(["mastery.quiz", "other"]),
        "x-kafka-ce_id": st.text(max_size=20),
    },
)
_content_types = st.sampled_from(
    ["application/json", "application/avro", "application/cloudevents+json", "text/plain", ""]
)


def _ascii(headers: dict[str, str]) -> dict[str, str]:
    """HTTP headers are bytes on the wire; keep what httpx can send."""
    return {k: v for k, v in headers.items() if v.isascii() and v.isprintable()}


@pytest.fixture(scope="module")
async def apps(function_env: None) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {}
    for spec in FUNCTIONS:
        app = create_asgi_app(
            target="handler", source=str(FUNCTIONS_DIR / spec.directory / "main.py")
        )
        clients[spec.name] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://fn"
        )
    yield clients
    for c in clients.values():
        await c.aclose()


_ROUTE_PATHS = sorted({route.split(" ", 1)[1] for spec in FUNCTIONS for route in spec.routes})
# "own": the function's own route, drawn most often so the handlers behind it get fuzzed.
_PATHS = st.sampled_from(
    ["own", "own", "own", "/", "/nope", *_ROUTE_PATHS, *(f"{p}/" for p in _ROUTE_PATHS)]
) | st.text(string.ascii_letters + string.digits + "-._~%:@", max_size=40).map(
    lambda t: f"/batch/mastery/{t}"
)


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.name)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=_bodies,
    auth=_authorization(),
    ce=_ce_headers,
    content_type=_content_types,
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    path=_PATHS,
)
async def test_no_input_gives_a_server_error(
    apps: dict[str, httpx.AsyncClient],
    spec: FunctionSpec,
    body: bytes,
    auth: dict[str, str],
    ce: dict[str, str],
    content_type: str,
    method: str,
    path: str,
) -> None:
    if path == "own":
        path = spec.routes[0].split(" ", 1)[1] if spec.routes else "/"
    headers = _ascii({**auth, **ce, "content-type": content_type})
    resp = await apps[spec.name].request(method, path, content=body, headers=headers)
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    media = resp.headers.get("content-type")
    if resp.status_code >= 400 and path == MCP_PATH and media == "application/json":
        assert resp.json()["error"]["code"] < 0  # the MCP transport's own JSON-RPC error
    elif resp.status_code >= 400:
        assert media == "application/problem+json"

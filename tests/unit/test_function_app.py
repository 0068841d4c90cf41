"""``FunctionApp`` at its edge, with an in-memory provider: errors, correlation ids, logs."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mastery.logs import logger
from mastery.web.app import FunctionApp, json_response, read_limited
from mastery.web.auth import AUTH_FAILURES, Authenticator
from mastery.web.problems import Problem
from tests.fakes import FakeClock, FakePublisher

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mastery.web.app import Context


async def _boom(request: Request, ctx: Context) -> Response:
    raise RuntimeError("secret internals: password=hunter2")


async def _teapot(request: Request, ctx: Context) -> Response:
    raise Problem(409, "already there", hint="try another")


async def _echo(request: Request, ctx: Context) -> Response:
    return json_response({"correlation_id": ctx.correlation_id, "function": ctx.function})


_PUBLISHER = FakePublisher()
_CLOCK = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))


async def _provider(_: str) -> Any:
    return SimpleNamespace(publisher=_PUBLISHER, clock=_CLOCK)


def _broker_down() -> Callable[[str], Awaitable[Any]]:
    """A provider whose broker takes no record: the access audit cannot be written."""
    down = FakePublisher()
    down.down = True

    async def provider(_: str) -> Any:
        return SimpleNamespace(publisher=down, clock=_CLOCK)

    return provider


def _client(app: FunctionApp) -> httpx.AsyncClient:
    async def endpoint(request: Request) -> Response:
        return await app(request)

    methods = ["GET", "POST", "PUT"]
    asgi = Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://fn")


@pytest.fixture
def app() -> FunctionApp:
    routes = {"POST /boom": _boom, "POST /teapot": _teapot, "POST /echo": _echo}
    return FunctionApp("unit-fn", routes, provider=_provider)


async def test_unhandled_errors_are_500_problems_without_internals(app: FunctionApp) -> None:
    stream = io.StringIO()
    logger("unit-fn")._logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    async with _client(app) as c:
        resp = await c.post("/boom", headers={"x-correlation-id": "req-42"})
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in resp.text
    assert "RuntimeError" not in resp.text
    assert resp.json()["correlation_id"] == "req-42"

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [error] = [line for line in lines if line.get("level") == "ERROR"]
    assert error["correlation_id"] == "req-42"
    assert error["service"] == "unit-fn"


async def test_a_server_error_marks_the_request_span_and_keeps_the_exception(
    app: FunctionApp, spans: InMemorySpanExporter
) -> None:
    async with _client(app) as client:
        assert (await client.post("/boom")).status_code == 500
        assert (await client.post("/teapot")).status_code == 409
    boom, teapot = spans.get_finished_spans()
    assert boom.name == "POST /boom"
    assert boom.status.status_code is StatusCode.ERROR
    assert [e.name for e in boom.events] == ["exception"]
    assert boom.attributes is not None
    assert boom.attributes["http.response.status_code"] == 500
    assert teapot.status.status_code is StatusCode.UNSET  # the caller's error, not ours


def test_a_function_traces_from_its_start_not_from_its_first_ready_probe() -> None:
    """OpenFaaS CE probes /_/health, which builds nothing: the first request must find
    tracing already on, or its span is lost and its children become roots."""
    code = (
        "from mastery.bootstrap import resources; from mastery import tracing;"
        "type(resources)().check('fn'); print(tracing.enabled())"
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "True", done.stderr


async def test_problems_keep_their_status_and_extensions(app: FunctionApp) -> None:
    async with _client(app) as c:
        resp = await c.post("/teapot")
    assert resp.status_code == 409
    assert resp.json()["hint"] == "try another"
    assert resp.json()["detail"] == "already there"


async def test_correlation_ids_are_kept_when_safe_and_made_otherwise(app: FunctionApp) -> None:
    async with _client(app) as c:
        kept = await c.post("/echo", headers={"x-correlation-id": "abc-123"})
        replaced = await c.post("/echo", headers={"x-correlation-id": "evil\r\nheader" + "x" * 200})
    assert kept.json()["correlation_id"] == "abc-123"
    assert kept.headers["x-correlation-id"] == "abc-123"
    new_id = replaced.json()["correlation_id"]
    assert new_id != "abc-123"
    assert len(new_id) == 32
    assert replaced.headers["x-correlation-id"] == new_id


async def test_unknown_route_and_wrong_method(app: FunctionApp) -> None:
    async with _client(app) as c:
        missing = await c.post("/nope")
        wrong = await c.put("/echo")
        health = await c.get("/health")
        openfaas = await c.get("/_/health")  # the OpenFaaS Community Edition's probe
    assert missing.status_code == 404
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert health.json() == {"status": "ok", "function": "unit-fn"}
    assert openfaas.json() == health.json()


async def test_a_made_up_method_is_counted_as_other(app: FunctionApp) -> None:
    """A label per method a client makes up would grow the request metric without bound
    (found by a security reviewer)."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:  # every method reaches it
        response = await app(Request(scope, receive))
        await response(scope, receive, send)

    labels = {"function": "unit-fn", "route": "other /echo", "status": "405"}
    before = REGISTRY.get_sample_value("mastery_requests_total", labels | {"method": "other"})
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://fn") as c:
        assert (await c.request("BREW", "/echo")).status_code == 405
    assert REGISTRY.get_sample_value("mastery_requests_total", labels | {"method": "BREW"}) is None
    after = REGISTRY.get_sample_value("mastery_requests_total", labels | {"method": "other"})
    assert after == (before or 0) + 1


async def test_a_content_length_of_other_digits_is_not_a_500() -> None:
    """ "²" is a digit to ``str.isdigit``, not to ``int`` (found by a security reviewer)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    headers = [(b"content-length", "²".encode("latin-1"))]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    assert await read_limited(Request(scope, receive), 10) == b"{}"


async def test_every_request_to_a_data_route_is_audited(app: FunctionApp) -> None:
    _PUBLISHER.sent.clear()
    async with _client(app) as c:
        await c.post("/echo", headers={"x-correlation-id": "audit-1"})
        await c.post("/teapot", headers={"x-correlation-id": "audit-2"})
        await c.get("/health")
    records = [json.loads(m.value or b"") for m in _PUBLISHER.sent]
    assert [(r["correlation_id"], r["outcome"], r["status"]) for r in records] == [
        ("audit-1", "allowed", 200),
        ("audit-2", "invalid", 409),
    ]
    assert all(m.topic == "mastery.audit" for m in _PUBLISHER.sent)
    assert records[0]["function"] == "unit-fn"
    assert records[0]["route"] == "POST /echo"
    assert records[0]["at"] == "2030-01-01T00:00:00+00:00"  # the injected clock's time


async def test_a_public_route_is_served_without_an_access_record() -> None:
    """A route that takes no token and answers no data (xAPI's About) is left out of the
    access audit, as /health is: it answers even with the broker down."""
    provider = _broker_down()
    routes = {"GET /about": _echo, "POST /echo": _echo}
    app = FunctionApp("unit-fn", routes, provider=provider, public={"GET /about"})
    async with _client(app) as c:
        about = await c.get("/about")
        data = await c.post("/echo")
    assert about.status_code == 200
    assert about.json()["function"] == "unit-fn"
    assert data.status_code == 503  # the data route's record could not be written
    assert app.public == {"GET /about"}
    with pytest.raises(ValueError, match="GET /nope"):
        FunctionApp("unit-fn", routes, provider=provider, public={"GET /nope"})


async def test_an_event_delivery_route_is_not_access_audited() -> None:
    """Deliveries are trusted like the topic and audited per event (the event audit): a
    function that also has callers (on-xapi) records those, not each delivery."""
    provider = _broker_down()
    routes = {"POST /": _echo, "POST /echo": _echo}
    app = FunctionApp("unit-fn", routes, provider=provider, deliveries={"POST /"})
    async with _client(app) as c:
        delivered = await c.post("/")
        data = await c.post("/echo")
    assert delivered.status_code == 200
    assert data.status_code == 503  # the caller's record could not be written
    assert app.deliveries == {"POST /"}
    assert app.public == frozenset()


async def test_no_audit_record_no_data() -> None:
    provider = _broker_down()
    app = FunctionApp("unit-fn", {"POST /echo": _echo}, provider=provider)
    async with _client(app) as c:
        resp = await c.post("/echo", headers={"x-correlation-id": "lost-1"})
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert "lost-1" in resp.text  # the correlation id, so the caller can report it
    assert "function" not in resp.json()  # the handler's answer was not sent


async def test_one_access_line_per_request_with_route_status_duration_and_ids(
    app: FunctionApp,
) -> None:
    stream = io.StringIO()
    logger("unit-fn")._logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    async with _client(app) as c:
        await c.post("/teapot", headers={"x-correlation-id": "line-1"})
        await c.post("/nope", headers={"x-correlation-id": "line-2"})
        await c.post("/boom", headers={"x-correlation-id": "line-3"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line.get("message") == "request"]
    assert [(a["method"], a["route"], a["status"], a["correlation_id"]) for a in access] == [
        ("POST", "POST /teapot", 409, "line-1"),
        ("POST", "unmatched", 404, "line-2"),
        ("POST", "POST /boom", 500, "line-3"),
    ]
    assert all(a["level"] == "INFO" and a["duration_ms"] >= 0 for a in access)
    # Tracing off: no trace id; no caller authenticated: no subject (None fields are left out).
    assert all(a.get("trace_id") is None and a.get("subject") is None for a in access)
    # One time format in the stream: the access lines' and Powertools' own (the 500's).
    [unhandled] = [line for line in lines if line.get("message") == "unhandled error"]
    rfc3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")
    assert all(rfc3339.fullmatch(line["timestamp"]) for line in [*access, unhandled]), lines


async def test_the_access_line_follows_the_log_level(app: FunctionApp) -> None:
    stream = io.StringIO()
    log = logger("unit-fn")
    log._logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log.setLevel("WARNING")
    try:
        async with _client(app) as c:
            await c.post("/echo")
    finally:
        log.setLevel("INFO")
    assert "request" not in stream.getvalue()


async def _params(request: Request, ctx: Context) -> Response:
    return json_response(ctx.path_params)


async def test_path_segments_keep_the_characters_a_url_escapes() -> None:
    app = FunctionApp("unit-fn", {"GET /things/{id}": _params}, provider=_provider)
    async with _client(app) as c:
        resp = await c.get("/things/a%3Fb%23c%5Cd")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": "a%3Fb%23c%5Cd"}


def test_each_routes_5xx_and_answer_counts_are_exported_at_zero_from_the_start() -> None:
    """The 5xx alert's terms: a series born with a new pod's first answers hides them
    from ``rate()``."""
    FunctionApp("zero-fn", {"POST /a": _echo, "GET /things/{id}": _params}, provider=_provider)
    for route in ("POST /a", "GET /things/{id}"):
        labels = {"function": "zero-fn", "route": route}
        assert REGISTRY.get_sample_value("mastery_request_errors_total", labels) == 0.0
        assert REGISTRY.get_sample_value("mastery_request_duration_seconds_count", labels) == 0.0


async def test_the_configured_check_is_back_to_1_once_the_settings_load() -> None:
    """``mastery_ready{check="configured"}`` went to 0 on a failed load and stayed there,
    so MasteryNotReady paged on for a function long since ready."""
    loads = iter([ValueError("MASTERY_HALF_LIFE_DAYS")])

    async def ping() -> None:
        return None

    async def provider(_: str) -> Any:
        if (failure := next(loads, None)) is not None:
            raise failure
        return SimpleNamespace(store=SimpleNamespace(ping=ping))

    app = FunctionApp("ready-fn", {"POST /echo": _echo}, provider=provider, uses_auth=False)
    labels = {"function": "ready-fn", "check": "configured"}
    async with _client(app) as c:
        assert (await c.get("/ready")).status_code == 503
        assert REGISTRY.get_sample_value("mastery_ready", labels) == 0.0
        assert (await c.get("/ready")).status_code == 200
    assert REGISTRY.get_sample_value("mastery_ready", labels) == 1.0


async def _whoami(request: Request, ctx: Context) -> Response:
    return json_response({"subject": ctx.authenticate(request).subject})


def _jwt(key: str = "k" * 32, **changes: Any) -> str:
    claims = {"sub": "u1", "role": "admin", "tenant": "t1", "exp": 1_900_000_000} | changes
    return jwt.encode(claims, key, algorithm="HS256")


async def test_a_401s_access_line_says_why_the_token_was_refused_never_the_token() -> None:
    """Expired, forged and missing tokens answered 401 with the same access line."""
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    authenticator = Authenticator("k" * 32, clock=clock)

    async def provider(_: str) -> Any:
        return SimpleNamespace(publisher=_PUBLISHER, clock=clock, authenticator=authenticator)

    app = FunctionApp("auth-fn", {"GET /whoami": _whoami}, provider=provider)
    tokens = {
        "missing": None,
        "malformed": "Bearer not-a-jwt",
        "bad_signature": f"Bearer {_jwt('z' * 32)}",
        "expired": f"Bearer {_jwt(exp=1_800_000_000)}",
        "invalid_claims": f"Bearer {_jwt(role='janitor')}",
        None: f"Bearer {_jwt()}",
    }
    stream = io.StringIO()
    logger("auth-fn")._logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    async with _client(app) as c:
        for authorization in tokens.values():
            headers = {"authorization": authorization} if authorization else {}
            await c.get("/whoami", headers=headers)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line.get("message") == "request"]
    assert [(a["status"], a.get("auth_failure")) for a in access] == [
        (200 if failure is None else 401, failure) for failure in tokens
    ]
    assert set(tokens) - {None} <= set(AUTH_FAILURES)
    for authorization in filter(None, tokens.values()):
        assert authorization.split()[-1] not in stream.getvalue()


async def test_a_compressed_body_is_415_not_a_400_not_json() -> None:
    from mastery.web.app import read_json

    async def echo_body(request: Request, ctx: Context) -> Response:
        return json_response(await read_json(request, 1000))

    app = FunctionApp("unit-fn", {"POST /body": echo_body}, provider=_provider)
    gzipped = gzip.compress(b'{"a": 1}')
    async with _client(app) as c:
        refused = await c.post("/body", content=gzipped, headers={"content-encoding": "gzip"})
        plain = await c.post(
            "/body", content=b'{"a": 1}', headers={"content-type": "application/json"}
        )
    assert refused.status_code == 415, refused.text
    assert "uncompressed" in refused.json()["detail"]
    assert plain.json() == {"a": 1}

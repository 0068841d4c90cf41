"""The OpenAPI document: built from the handlers' models, committed, and served by each function."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from mastery.registry import FUNCTIONS
from mastery.web.openapi import OPERATIONS, gateway_document, rendered

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"


def test_the_committed_document_is_current() -> None:
    assert COMMITTED.read_text() == rendered(gateway_document()), (
        "docs/openapi.json is stale: run `mastery openapi --write docs/openapi.json`"
    )


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = gateway_document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_routed_operation_is_described_with_its_errors() -> None:
    doc = gateway_document()
    routes = {r for spec in FUNCTIONS for r in spec.routes}
    public = {r for spec in FUNCTIONS for r in spec.public}
    described = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item}
    assert described == routes
    assert routes <= set(OPERATIONS)
    assert {r for r in routes if not OPERATIONS[r].auth} == public
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if f"{method.upper()} {path}" in public:  # no token, so no 401 nor rate limit
                assert "security" not in op, path
                assert set(op["responses"]) == {"200"}, path
                continue
            # xAPI clients (Moodle, Ralph) send the token as an HTTP Basic password.
            basic = [{"basicAuth": []}] if path == "/xapi/statements" else []
            assert op["security"] == [{"bearerAuth": []}, *basic], path
            assert "401" in op["responses"], path
            assert "application/problem+json" in op["responses"]["429"]["content"], path
            assert "Retry-After" in op["responses"]["429"]["headers"], path
    query = doc["paths"]["/mastery/query"]["post"]["responses"]["200"]
    assert set(query["headers"]) >= {"RateLimit-Limit", "RateLimit-Remaining"}


@pytest.fixture(autouse=True)
def _jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A function that verifies callers does not start (load) without one."""
    monkeypatch.setenv("MASTERY_JWT_SECRET", "s" * 32)


def _load(directory: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"fn_{directory}", ROOT / "functions" / directory / "main.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.name)
async def test_each_function_serves_its_part(spec: Any) -> None:
    app = _load(spec.directory)
    transport = httpx.ASGITransport(app=_asgi(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
        resp = await client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    validate(doc)
    paths = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item}
    # Routed paths, and the trigger's "POST /" of every function a topic triggers.
    assert paths == set(spec.routes) | ({"POST /"} if spec.topics else set())
    # What the registry calls public, the function serves without an access record.
    assert app.public == set(spec.public)
    # A function with callers and a topic (on-xapi) audits its callers, not the trigger.
    assert app.deliveries == ({"POST /"} if spec.topics and spec.routes else set())


def _asgi(app: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def endpoint(request: Any) -> Any:
        return await app(request)

    return Starlette(routes=[Route("/{p:path}", endpoint, methods=["GET", "POST"])])

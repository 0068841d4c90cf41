"""Fixtures of the integration tests that run the deployed functions in process."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import jwt
import pytest
from functions_framework.aio import create_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mastery.bootstrap import build, close_resources
from mastery.events.kafka import create_topics
from mastery.web.app import FunctionApp
from tests.conftest import JWT_SECRET

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from mastery.bootstrap import Resources
    from mastery.settings import Settings
    from mastery.web.app import Context

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"
JSON = {"content-type": "application/json"}


def token(sub: str, role: str, tenant: str, **claims: object) -> dict[str, str]:
    """Headers of a request with a valid token for these claims."""
    body = {"sub": sub, "role": role, "tenant": tenant, "exp": int(time.time()) + 300, **claims}
    return {"authorization": f"Bearer {jwt.encode(body, JWT_SECRET, algorithm='HS256')}", **JSON}


@pytest.fixture
async def client(function_env: None) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """Opens a client of a deployed function (its ``functions/<dir>/main.py``), by name."""
    opened: list[httpx.AsyncClient] = []

    def open_(name: str) -> httpx.AsyncClient:
        directory = name.replace("-", "_")
        app = create_asgi_app(target="handler", source=str(FUNCTIONS_DIR / directory / "main.py"))
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn")
        opened.append(c)
        return c

    yield open_
    for c in opened:
        await c.aclose()


@pytest.fixture(scope="module")
async def function_env(settings: Settings) -> AsyncIterator[None]:
    """The deployed functions read their settings from the environment, as in production.

    Their process-wide resources are closed afterwards: the next module, or the same one
    on the other Redis topology, builds them anew from its own environment.
    """
    create_topics(settings)
    env = {
        "REDIS_URL": settings.redis_url,
        "MASTERY_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MASTERY_JWT_SECRET": JWT_SECRET,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    await close_resources()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def serve(
    name: str,
    routes: dict[str, Callable[[Request, Context], Awaitable[Response]]],
    res: Resources,
    *,
    uses_auth: bool = True,
) -> httpx.AsyncClient:
    """A client of one function instance using ``res`` (its own clients, as a process has)."""

    async def provider(_: str) -> Resources:
        return res

    app = FunctionApp(name, routes, provider=provider, uses_auth=uses_auth)

    async def endpoint(request: Request) -> Response:
        return await app(request)

    asgi = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://fn")


@pytest.fixture
async def redis_down(settings: Settings) -> AsyncIterator[Resources]:
    """A process's resources whose Redis cannot be reached (nothing listens on port 1)."""
    res = build(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    yield res
    await res.aclose()

"""Fixtures of the integration tests that run the deployed functions in process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mastery.events.kafka import create_topics
from mastery.web import FunctionApp
from tests.conftest import JWT_SECRET

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from mastery.bootstrap import Resources
    from mastery.settings import Settings
    from mastery.web import Context

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"


@pytest.fixture(scope="module")
def function_env(settings: Settings) -> Iterator[None]:
    """The deployed functions read their settings from the environment, as in production."""
    create_topics(settings)
    env = {
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MASTERY_JWT_SECRET": JWT_SECRET,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
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

    asgi = Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://fn")

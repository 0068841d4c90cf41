"""The local gateway: one port in front of every function, routing the spec's paths.

Only for ``mastery dev``; in a cluster the Knative/OpenFaaS ingress plays this part.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mastery.web.app import correlation_id_of, json_response
from mastery.web.openapi import TITLE, merge
from mastery.web.problems import Problem
from mastery.web.routing import Routes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from starlette.requests import Request

__all__ = ["create_app"]

# Hop-by-hop headers, and the length of a body that goes on as read (whole: the HTTP
# client frames it anew; a chunked request forwarded with its Transfer-Encoding and a
# Content-Length was refused by the function's server).
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "upgrade", "trailer", "te", "content-length")
)
# A function's answer goes out with every header but those, and what describes the bytes
# on the inner connection (the body is sent as read, decoded).
_NOT_FORWARDED = _HOP_BY_HOP | {"content-encoding", "date", "server"}
# OPTIONS and HEAD too: the function answers what it does not serve (405 with Allow).
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(
    routes: Mapping[str, str],
    functions: Mapping[str, str],
    ready_files: Mapping[str, Path] | None = None,
) -> Starlette:
    """Args:
    routes: ``{"POST /mastery/query": "http://127.0.0.1:8081"}``.
    functions: ``{name: base url}``, each asked for ``/ready``.
    ready_files: ``{trigger name: file}`` that exists once that trigger has its partitions.
    """
    client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=64))
    table = Routes(routes)

    async def proxy(request: Request) -> Response:
        path = request.url.path
        # By path alone: a wrong method reaches the function, which answers 405.
        served = table.serves(path)
        if served is None:
            return _problem(request, Problem(404, f"no function serves {path}"))
        base = served[1]
        # The path as it came (percent-encoded): a decoded one may hold control characters.
        raw_path = request.scope.get("raw_path") or path.encode()
        query = request.url.query
        outgoing = client.build_request(
            request.method,
            base + raw_path.decode("latin-1") + (f"?{query}" if query else ""),
            content=await request.body(),
            # Values as sent but for surrounding blanks, which the HTTP client refuses to
            # send (an empty "Bearer " would otherwise be a 503, not the function's 401).
            headers={
                k: v.strip()
                for k, v in request.headers.items()
                if k != "host" and k not in _HOP_BY_HOP
            },
        )
        try:
            upstream = await client.send(outgoing, stream=True)
        except httpx.TransportError:
            return _problem(request, Problem.unavailable("function not reachable"))
        headers = {k: v for k, v in upstream.headers.items() if k not in _NOT_FORWARDED}
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):
            # Server-sent events (MCP may answer so): relay each as it comes.
            close = BackgroundTask(upstream.aclose)
            return StreamingResponse(
                upstream.aiter_raw(), upstream.status_code, headers, None, close
            )
        try:
            body = await upstream.aread()
        except httpx.TransportError:
            return _problem(request, Problem.unavailable("function not reachable"))
        finally:
            await upstream.aclose()
        media = upstream.headers.get("content-type", "")
        if upstream.status_code >= 400 and "json" not in media:
            # A server layer below the function (its HTTP parser) answered in plain text:
            # every error leaves this port as problem+json, as the document says.
            below = Problem(upstream.status_code, body.decode(errors="replace")[:200])
            return _problem(request, below)
        return Response(body, upstream.status_code, headers)

    async def ready(request: Request) -> Response:
        async def probe(name: str, base: str) -> tuple[str, object]:
            try:
                resp = await client.get(base + "/ready", timeout=3)
            except httpx.TransportError as exc:
                return name, f"unreachable: {type(exc).__name__}"
            return name, "ok" if resp.status_code == 200 else resp.json().get("checks", resp.text)

        results = dict(await asyncio.gather(*(probe(n, b) for n, b in functions.items())))
        for name, path in (ready_files or {}).items():
            results[name] = "ok" if path.exists() else "waiting for partition assignment"
        if all(v == "ok" for v in results.values()):
            return json_response({"status": "ready", "functions": results})
        return _problem(request, Problem.unavailable("not ready", functions=results))

    async def openapi(request: Request) -> Response:
        """Every routed function's part, merged: the document of what this port serves."""
        try:
            answers = await asyncio.gather(
                *(client.get(base + "/openapi.json", timeout=5) for base in set(routes.values()))
            )
        except httpx.TransportError:
            return _problem(request, Problem.unavailable("function not reachable"))
        parts = [a.json() for a in answers if a.status_code == 200]
        if len(parts) != len(answers):
            return _problem(request, Problem.unavailable("a function has no OpenAPI document"))
        return json_response(merge(TITLE, parts, routes))

    async def health(_: Request) -> Response:
        return json_response({"status": "ok", "function": "gateway"})

    async def refused(request: Request, exc: Exception) -> Response:
        # Starlette's own 404/405 (a path its router cannot match, e.g. one holding a
        # newline) would be plain text: every answer of this port is problem+json.
        status = getattr(exc, "status_code", 404)
        return _problem(request, Problem(status, f"no function serves {request.url.path[:100]!r}"))

    return Starlette(
        exception_handlers={404: refused, 405: refused},
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/{path:path}", proxy, methods=_METHODS),
        ],
        lifespan=_closing(client),
    )


def _problem(request: Request, problem: Problem) -> Response:
    """The gateway's own error answer, with a correlation id as every answer has."""
    return problem.response(correlation_id_of(request.headers))


def _closing(client: httpx.AsyncClient) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return lifespan

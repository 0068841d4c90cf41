"""The MCP server over Streamable HTTP, as a ``FunctionApp`` route (``/mcp``).

A request whose ``Origin`` is not in ``MASTERY_MCP_ALLOWED_ORIGINS`` is refused first: a
403 problem (audited as ``denied``), whatever its token, as the MCP specification asks
against DNS rebinding; one without ``Origin`` (an agent, a CLI, a server) goes on. The
bearer token is verified next, exactly as every HTTP function verifies it: a
missing or bad one is a 401 problem (audited as ``unauthenticated``) before any MCP
handling. The verified caller then travels with the request (ASGI scope state) to the
tool calls, which apply the rate limit, policy and audit per call (``mastery.mcp.server``).
The SDK's JSON-RPC errors (unknown method, unsupported protocol version) go out as it
writes them, but for those about a body that is not JSON or not a JSON-RPC message,
which the engine words (``_worded``); its refusals without one become problem+json
(``_answer``).

The SDK's session manager runs stateless with JSON responses: every POST is answered on
its own, nothing is kept between requests, and no answer is a stream, so any proxy in
front (the local gateway, an ingress) can buffer it. ``GET`` (a server-to-client stream)
and ``DELETE`` (ending a session) have nothing to do without sessions: 405, as the MCP
specification allows.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import orjson
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response

from mastery.errors import Unavailable
from mastery.mcp.server import Caller, invalid, mcp_server
from mastery.web.app import write_access
from mastery.web.problems import Problem

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message

    from mastery.web.app import Context

__all__ = ["MCP_PATH", "McpEndpoint"]

MCP_PATH = "/mcp"
_CALLER = "mastery.mcp.caller"


async def _caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
    request: Request | None = ctx.request
    caller = request.scope.get("state", {}).get(_CALLER) if request is not None else None
    if not isinstance(caller, Caller):  # only requests through McpEndpoint reach the server
        raise RuntimeError("MCP request without a verified caller")
    return caller


class McpEndpoint:
    """The ``FunctionApp`` handler of ``POST /mcp``: one per process.

    The SDK's session manager needs a running task group; a function has no lifespan
    hook, so it is started by the first request and lives as long as the process.
    """

    def __init__(self) -> None:
        self._manager: StreamableHTTPSessionManager | None = None
        self._started: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, request: Request, ctx: Context) -> Response:
        route = f"{request.method} {MCP_PATH}"
        if not _origin_allowed(request.headers, ctx.resources.settings.mcp_allowed_origins):
            # Who, when the token says: the record then reaches the tenant's audit.
            with contextlib.suppress(Problem, Unavailable):
                ctx.authenticate(request)
            await write_access(ctx, route, 403)
            raise Problem(403, "requests from this Origin are not allowed")
        try:
            principal = ctx.authenticate(request)
        except Problem as problem:
            await write_access(ctx, route, problem.status)
            raise
        state = request.scope.setdefault("state", {})
        state[_CALLER] = Caller(ctx.resources, principal, ctx.correlation_id)
        manager = await self._start(ctx.resources.settings.max_body_bytes)
        return await _answer(manager.handle_request, request)

    async def _start(self, max_body_bytes: int) -> StreamableHTTPSessionManager:
        if self._manager is None:
            # The SDK's DNS-rebinding check stays off: it checks Host too (the ingress's,
            # not ours: 421 unless listed), and its 403 would leave no access record.
            # ``__call__`` checks ``Origin`` instead.
            self._manager = StreamableHTTPSessionManager(
                app=mcp_server(_caller_of),
                json_response=True,
                stateless=True,
                security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
                max_request_body_size=max_body_bytes,  # MASTERY_MAX_BODY_BYTES, as elsewhere
            )
            self._started = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._manager, self._started))
        assert self._started is not None
        await self._started.wait()
        return self._manager

    @staticmethod
    async def _run(manager: StreamableHTTPSessionManager, started: asyncio.Event) -> None:
        async with manager.run():
            started.set()
            await asyncio.Event().wait()  # until the process ends


def _origin_allowed(headers: Headers, allowed: tuple[str, ...]) -> bool:
    """Whether every ``Origin`` of the request is allowed (``allowed`` as ``Settings`` keeps
    them, in lower case); a request without one is."""
    return all(origin.lower() in allowed for origin in headers.getlist("origin"))


async def _answer(app: ASGIApp, request: Request) -> Response:
    """What ``app`` answers ``request``, in full: the SDK answers JSON (``json_response``),
    never a stream, so the answer is a plain ``Response`` whose real status ``FunctionApp``
    counts, logs and traces like any other.

    A 4xx that is a JSON-RPC error (an unknown method, an unsupported protocol version
    with the versions supported, a body that is not JSON-RPC) goes out with the code the
    SDK chose: the protocol defines it and clients read it (a body's, worded by
    ``_worded``). A refusal without one (plain
    text for a body too large or a wrong content type, no body for some 406s) becomes a
    problem+json like every other error of the HTTP surface, as does any 5xx.
    """
    start: Message = {}
    body: list[bytes] = []
    received: list[bytes] = []

    async def receive() -> Message:  # the request's body as the SDK reads it, kept
        message = await request.receive()
        if message["type"] == "http.request":
            received.append(message.get("body", b""))
        return message

    async def collect(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(request.scope, receive, collect)
    status, content = start["status"], b"".join(body)
    headers = list(start.get("headers", []))
    if status >= 500 or (status >= 400 and not _is_jsonrpc_error(headers, content)):
        raise Problem(status, _reason(content, status))
    if status == 400:
        worded = _worded(content, b"".join(received))
        if worded is not content:
            content = worded
            length = str(len(content)).encode()
            headers = [(k, length if k == b"content-length" else v) for k, v in headers]
    response = Response(content, status)
    response.raw_headers = headers
    return response


def _worded(answer: bytes, body: bytes) -> bytes:
    """The SDK's JSON-RPC error for a body that is not JSON, or not a JSON-RPC message
    (no request ``id`` to answer), in the engine's words: ``answer`` itself otherwise.

    The SDK chose the error (its code stays); its message, though, is the parser's or
    the whole pydantic report (each model of a union, the input quoted, links to
    pydantic's site) on the protocol with a handshake, and a bare sentence on the
    stateless one. The engine checks the body itself and names each member at fault
    and why, as ``mastery.mcp.server`` words invalid params.
    """
    doc = orjson.loads(answer)
    error = doc["error"]
    if doc.get("id") is not None or error["code"] not in (
        PARSE_ERROR,
        INVALID_REQUEST,
        INVALID_PARAMS,
    ):
        return answer
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        wording: dict[str, Any] = {"message": "Parse error: the body is not valid JSON"}
    else:
        wrong = _envelope(message)
        if wrong is None:  # the SDK refused something else of it: its message says what
            return answer
        text, data = wrong
        wording = {"message": text, "data": data}
    return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": error["code"], **wording}})


def _envelope(message: object) -> tuple[str, dict[str, Any]] | None:
    """What is wrong with ``message`` as one JSON-RPC 2.0 message (read as the kind its
    members say it is), or ``None``."""
    if not isinstance(message, dict):
        reason = "must be one JSON-RPC message, a JSON object (batches are not taken)"
        return f"invalid request: body: {reason}", {
            "errors": [{"field": "body", "message": reason}]
        }
    kind: type[BaseModel] = (
        JSONRPCResponse
        if "result" in message
        else JSONRPCError
        if "error" in message
        else JSONRPCRequest
        if "id" in message
        else JSONRPCNotification
    )
    try:
        kind.model_validate(message, by_name=False)
    except ValidationError as exc:
        return invalid(exc, "invalid request")
    return None


def _is_jsonrpc_error(headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Whether the answer is a JSON-RPC error object sent as ``application/json``."""
    media = Headers(raw=headers).get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        return False
    try:
        JSONRPCError.model_validate_json(body)
    except ValidationError:
        return False
    return True


def _reason(body: bytes, status: int) -> str:
    """A short reason from the SDK's refusal: the first line of its message, at most 160
    characters (validation messages go on to quote the input)."""
    try:
        doc = orjson.loads(body)
        text = str(doc["error"]["message"]) if isinstance(doc, dict) else ""
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = body.decode("utf-8", "replace")
    first = text.strip().splitlines()[0][:160] if text.strip() else ""
    return first or f"the MCP transport refused the request ({status})"

"""The MCP server: the tools of ``mastery.mcp.tools`` under the caller's security context.

Stateless (no session is kept between requests), so it fits a function that scales to
zero. Each tool call goes through what every HTTP request of a data function goes
through: the caller's rate limit, argument validation (422), the policy (403/404), and
one access-audit record naming the subject, the acting agent (``act``) and the students,
written before the answer leaves (fail closed). A refusal is a tool result with
``isError`` and a readable message, never a transport failure; only a call to a tool
that does not exist, or whose ``params`` do not validate, is a JSON-RPC error, as the
protocol asks (the latter worded by ``_worded_params``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mcp_types as types
import orjson
from mcp.server import Server
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import BaseModel, ValidationError

from mastery.errors import Unavailable
from mastery.logs import logger
from mastery.mcp.tools import TOOLS, ToolSpec, input_schema, output_schema
from mastery.metrics import MCP_TOOL_CALLS
from mastery.web.app import Context, write_access
from mastery.web.limits import enforce_rate_limit
from mastery.web.problems import Problem, from_validation

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from mcp.server import ServerRequestContext
    from mcp.server.context import CallNext, HandlerResult

    from mastery.web.app import Services
    from mastery.web.auth import Principal

__all__ = [
    "FUNCTION",
    "INSTRUCTIONS",
    "Caller",
    "call_tool",
    "invalid",
    "list_tools",
    "mcp_server",
    "new_correlation_id",
]

FUNCTION = "mcp"
INSTRUCTIONS = (
    "Learning analytics of the Mastery Engine: each student's mastery (0-1) from "
    "completion, quiz, code-quality and consistency events, its prediction, "
    "recommendations, history and cohort comparison. Call these tools instead of reading "
    "raw learning events. Answers are limited to what the caller's token may see."
)
_log = logger(FUNCTION)
#: The tool label of a call to a name that is no tool (bounded labels).
_UNKNOWN = "?"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the verified principal, with the process's clients."""

    resources: Services
    principal: Principal
    correlation_id: str


def list_tools() -> list[types.Tool]:
    return [
        types.Tool(
            name=t.name,
            title=t.title,
            description=t.description,
            input_schema=input_schema(t),
            output_schema=output_schema(t),
            annotations=types.ToolAnnotations(
                title=t.title, read_only_hint=True, open_world_hint=False
            ),
        )
        for t in TOOLS.values()
    ]


async def call_tool(caller: Caller, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    """Run one tool for ``caller``, audited before the answer leaves.

    A refusal or failure of the tool is an ``isError`` result, for the model to read. An
    unknown tool is a protocol error (``INVALID_PARAMS``, as the specification asks), once
    its call is audited; without the audit, every call is the same 503 result.

    Raises:
        MCPError: no tool is named ``name``.
    """
    tool = TOOLS.get(name)
    label = name if tool else _UNKNOWN
    ctx = Context(caller.resources, caller.correlation_id, FUNCTION)
    ctx.caller = caller.principal
    result, status = await _run(tool, ctx, caller, arguments) if tool else (None, 404)
    try:
        await write_access(ctx, f"tools/call {label}", status)
    except Unavailable as exc:
        _log.error("access audit not written", extra=_extra(ctx, exc))
        unaudited = Problem.unavailable("the access audit is unavailable, retry later")
        MCP_TOOL_CALLS.labels(label, str(unaudited.status)).inc()
        return _error(unaudited, ctx.correlation_id)
    MCP_TOOL_CALLS.labels(label, str(status)).inc()
    if result is None:
        raise MCPError(INVALID_PARAMS, f"Unknown tool: {name}; see tools/list")
    return result


async def _run(
    tool: ToolSpec, ctx: Context, caller: Caller, arguments: dict[str, Any]
) -> tuple[types.CallToolResult, int]:
    """The tool's result and the status it stands for; every refusal is an error result."""
    res = caller.resources
    try:
        await enforce_rate_limit(caller.principal, res.rate_limiter, res.settings)
        args = _arguments(tool.arguments, arguments)
        answer = await tool.run(ctx, caller.principal, args)
        summary = tool.summary(answer)
        return _answer(answer.model_dump(mode="json", by_alias=True), summary), 200
    except Problem as problem:
        return _error(problem, ctx.correlation_id), problem.status
    except Unavailable as exc:
        _log.warning("dependency unavailable", extra=_extra(ctx, exc))
        return _error(Problem.unavailable(), ctx.correlation_id), 503
    except Exception as exc:
        _log.exception("unhandled error", extra=_extra(ctx, exc))
        return _error(Problem(500, "internal error"), ctx.correlation_id), 500


def mcp_server(caller_of: Callable[[ServerRequestContext[Any, Any]], Awaitable[Caller]]) -> Server:
    """The low-level server; ``caller_of`` says who makes a request (HTTP token, stdio env)."""

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list_tools())

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            caller = await caller_of(ctx)
        except Problem as problem:  # stdio: the token expired since the host started us
            tool = params.name if params.name in TOOLS else _UNKNOWN
            MCP_TOOL_CALLS.labels(tool, str(problem.status)).inc()
            return _error(problem, new_correlation_id())
        return await call_tool(caller, params.name, params.arguments or {})

    server = Server(
        "mastery-engine",
        version="0.1.0",
        instructions=INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
    server.middleware.append(_worded_params)  # innermost: after the SDK's tracing span
    return server


async def _worded_params(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """The SDK's answer to a request whose ``params`` do not validate (a ``tools/call``
    without ``name``, ``arguments`` not an object), in the engine's words: the members at
    fault and why, as a 422 names them, where the SDK says only "Invalid request
    parameters". A ``ServerMiddleware`` (``Server.middleware``): the SDK raises the
    pydantic error through the chain and maps whatever comes out to the wire."""
    try:
        return await call_next(ctx)
    except ValidationError as exc:
        raise MCPError(INVALID_PARAMS, *invalid(exc, "invalid params", under="params")) from None


def invalid(exc: ValidationError, what: str, *, under: str = "") -> tuple[str, dict[str, Any]]:
    """A JSON-RPC error's message and data for ``exc``: each member at fault (its path,
    under ``under`` unless the path starts there) and a short reason, never the input or
    the library's links. The message, ``what: path: reason; ...``, has at most 200
    characters; ``data.errors`` has them all (up to 10)."""
    errors: list[dict[str, str]] = []
    for error in from_validation(exc).extensions["errors"]:
        field = error["field"]
        if under and field != under and not field.startswith(f"{under}."):
            field = f"{under}.{field}" if field != "body" else under
        entry = {"field": field, "message": error["message"]}
        if entry not in errors:
            errors.append(entry)
    errors = errors[:10]
    message = f"{what}: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return (message if len(message) <= 200 else message[:197] + "..."), {"errors": errors}


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def _zero() -> None:
    """Each tool's answers and failures exported at 0 from the start (``mastery.metrics``):
    the 5xx alert would not see a new pod's first failed calls on series born with them."""
    for tool in TOOLS:
        for status in ("200", "500", "503"):
            MCP_TOOL_CALLS.labels(tool, status)


_zero()


def _arguments(model: type[BaseModel], arguments: dict[str, Any]) -> BaseModel:
    """The validated arguments; 422 naming every argument at fault (not echoing values)."""
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        errors = from_validation(exc).extensions["errors"]
        names = ", ".join(e["field"] for e in errors)
        raise Problem(422, f"invalid arguments: {names}", errors=errors) from None


def _answer(structured: dict[str, Any], summary: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=summary)], structured_content=structured
    )


def _error(problem: Problem, correlation_id: str) -> types.CallToolResult:
    """The problem for a model to read: a sentence (status, title, detail and the fields
    at fault), then the problem document as JSON text.

    No structured content: the tool's ``outputSchema`` describes its answer, which an
    error is not, and clients validate any structured content against it, ``isError``
    or not (the TypeScript SDK turns a mismatch into an exception the model never sees).
    """
    doc = problem.document(correlation_id)
    text = f"Error {problem.status} {doc['title']}: {problem.detail}"
    fields = problem.extensions.get("errors") or []
    if fields:
        text += "\n" + "; ".join(f"{e['field']}: {e['message']}" for e in fields)
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text=text),
            types.TextContent(type="text", text=orjson.dumps(doc).decode()),
        ],
        is_error=True,
    )


def _extra(ctx: Context, exc: BaseException) -> dict[str, str]:
    return {"correlation_id": ctx.correlation_id, "error": f"{type(exc).__name__}: {exc}"}

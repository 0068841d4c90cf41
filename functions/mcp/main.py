"""mcp: ``/mcp``, the engine's operations as MCP tools (Streamable HTTP, stateless)."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.mcp import MCP_PATH, McpEndpoint
from mastery.web.app import FunctionApp

_endpoint = McpEndpoint()
# Each tool call is a data access of its own: the endpoint audits those, not the request.
app = FunctionApp("mcp", {f"POST {MCP_PATH}": _endpoint}, audits_requests=False, provider=resources)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

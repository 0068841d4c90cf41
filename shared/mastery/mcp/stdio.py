"""``mastery mcp --stdio``: the same tools for a local agent host, over stdin/stdout.

The caller is the token in ``MASTERY_MCP_TOKEN`` (often a delegated one: ``act`` names
the agent), verified like an HTTP request's on every call, so an expired token stops
working; the rate limit, policy and access audit are those of the HTTP transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp.server.stdio import stdio_server

from mastery.errors import Unavailable
from mastery.mcp.server import Caller, mcp_server, new_correlation_id

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext

    from mastery.web.app import Services
    from mastery.web.auth import Principal

__all__ = ["TOKEN_ENV", "serve_stdio", "verify"]

TOKEN_ENV = "MASTERY_MCP_TOKEN"


def verify(res: Services, token: str) -> Principal:
    """The token's principal; ``Problem`` 401 when it does not verify."""
    if res.authenticator is None:
        raise Unavailable("MASTERY_JWT_SECRET is not configured")
    return res.authenticator.authenticate(f"Bearer {token}")


async def serve_stdio(res: Services, token: str) -> None:
    """Serve MCP on stdin/stdout until the host closes them."""
    verify(res, token)  # refuse to start with a token that is already bad

    async def caller_of(_: ServerRequestContext[Any, Any]) -> Caller:
        return Caller(res, verify(res, token), new_correlation_id())

    server = mcp_server(caller_of)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())

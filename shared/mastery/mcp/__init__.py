"""The engine as MCP tools for agents: Streamable HTTP (``/mcp``) and stdio."""

from mastery.mcp.http import MCP_PATH, McpEndpoint
from mastery.mcp.server import Caller, call_tool, list_tools, mcp_server
from mastery.mcp.stdio import TOKEN_ENV, serve_stdio
from mastery.mcp.tools import TOOLS, ToolSpec

__all__ = [
    "MCP_PATH",
    "TOKEN_ENV",
    "TOOLS",
    "Caller",
    "McpEndpoint",
    "ToolSpec",
    "call_tool",
    "list_tools",
    "mcp_server",
    "serve_stdio",
]

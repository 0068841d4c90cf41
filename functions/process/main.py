"""process: ``POST /process``, intents of other services routed to the shared operations."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.process import process_intent

app = FunctionApp("process", {"POST /process": process_intent}, provider=resources)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

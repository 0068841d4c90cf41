"""The baseline function: functions-framework in ASGI mode answering a constant JSON body."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return Response(b'{"ok":true}', media_type="application/json")

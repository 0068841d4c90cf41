"""audit-log: ``POST /audit/recent``, an admin's view of their tenant's recent audit records."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.audit import recent_audit

app = FunctionApp("audit-log", {"POST /audit/recent": recent_audit}, provider=resources)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

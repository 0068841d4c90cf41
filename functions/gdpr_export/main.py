"""gdpr-export: ``POST /gdpr/export``, everything held about a student (GDPR access)."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.gdpr import export_student

app = FunctionApp("gdpr-export", {"POST /gdpr/export": export_student}, provider=resources)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

"""mastery-history: ``POST /analytics/mastery-history``, mastery per day, week or month."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.history import mastery_history_report

app = FunctionApp(
    "mastery-history",
    {"POST /analytics/mastery-history": mastery_history_report},
    provider=resources,
)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

"""recommendations: ``POST /recommendations/adaptive``, what to study first."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.recommendations import recommend_adaptive

app = FunctionApp(
    "recommendations", {"POST /recommendations/adaptive": recommend_adaptive}, provider=resources
)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

"""prediction: ``POST /predictions/next-week``, mastery in 7 days, trend, intervention flag."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.prediction import predict_next_week

app = FunctionApp(
    "prediction", {"POST /predictions/next-week": predict_next_week}, provider=resources
)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

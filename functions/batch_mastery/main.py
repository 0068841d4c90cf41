"""batch-mastery: ``POST /batch/mastery`` and ``GET /batch/mastery/{batch_id}``."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.batch import batch_status, submit_batch

app = FunctionApp(
    "batch-mastery",
    {"POST /batch/mastery": submit_batch, "GET /batch/mastery/{batch_id}": batch_status},
    provider=resources,
)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

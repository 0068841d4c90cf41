"""batch-worker: runs batches from `mastery.batch.{high,normal,low}` (KafkaSource, connector)."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.batch import batch_event

app = FunctionApp(
    "batch-worker", {"POST /": batch_event}, uses_kafka=True, uses_auth=False, provider=resources
)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

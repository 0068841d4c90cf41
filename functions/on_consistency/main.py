"""on-consistency: applies `mastery.consistency` events from KafkaSource / kafka-connector."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.domain import Component
from mastery.web.app import FunctionApp
from mastery.web.events import event_handler

app = FunctionApp(
    "on-consistency",
    {"POST /": event_handler(Component.CONSISTENCY)},
    uses_kafka=True,
    uses_auth=False,
    provider=resources,
)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

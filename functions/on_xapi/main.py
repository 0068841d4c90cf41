"""on-xapi: xAPI statements, sent (``POST``/``PUT /xapi/statements``) or from `mastery.xapi`;
``GET /xapi/about``, the versions it speaks."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.topics import XAPI_TOPIC
from mastery.web.app import FunctionApp
from mastery.web.events import topic_handler
from mastery.web.xapi import RESPONSE_HEADERS, about, post_statements, put_statement

app = FunctionApp(
    "on-xapi",
    {
        "POST /xapi/statements": post_statements,
        "PUT /xapi/statements": put_statement,
        "GET /xapi/about": about,
        "POST /": topic_handler(XAPI_TOPIC),
    },
    uses_kafka=True,
    provider=resources,
    path_headers={"/xapi/statements": RESPONSE_HEADERS, "/xapi/about": RESPONSE_HEADERS},
    public={"GET /xapi/about"},
    deliveries={"POST /"},
)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

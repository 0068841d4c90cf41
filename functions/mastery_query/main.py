"""mastery-query: ``POST /mastery/query``, a student's explained mastery score."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.query import query_mastery

app = FunctionApp("mastery-query", {"POST /mastery/query": query_mastery}, provider=resources)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

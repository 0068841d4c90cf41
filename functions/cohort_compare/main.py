"""cohort-compare: ``POST /analytics/compare``, a student next to their cohort."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from mastery.bootstrap import resources
from mastery.web.app import FunctionApp
from mastery.web.compare import compare_cohort

app = FunctionApp("cohort-compare", {"POST /analytics/compare": compare_cohort}, provider=resources)


@functions_framework.aio.http
async def handler(request: Request) -> Response:
    return await app(request)

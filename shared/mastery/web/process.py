"""``POST /process``: the service-to-service entry point, one envelope for every intent.

``{"intent": "calculation" | "prediction" | "recommendations", "student_id": ...}`` runs
the very operation of the dedicated function (``mastery_of``, ``prediction_of``,
``recommendations_of``), under the caller's own security context: their JWT, or a
service's delegated token (``act`` claim, see ``mastery.web.auth``). The same policy,
rate limit and access audit apply.

Every answer is the envelope ``{"intent", "result", "error", "correlation_id"}`` with the
operation's HTTP status. Errors are also RFC 9457 problems (``application/problem+json``,
the envelope's members as extensions), so generic clients read them like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mastery.errors import Unavailable
from mastery.logs import logger
from mastery.policy import Action
from mastery.web.app import model_response, read_json, validate
from mastery.web.prediction import prediction_of
from mastery.web.problems import Problem
from mastery.web.query import mastery_of
from mastery.web.recommendations import recommendations_of
from mastery.web.requests import IntentEnvelope, QueryRequest, StudentRequest
from mastery.web.responses import (
    MasteryDocument,
    PredictionDocument,
    ProcessDocument,
    RecommendationsDocument,
)
from mastery.web.student import admit

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["INTENTS", "process_intent"]

#: Each intent: the request its dedicated function takes, and the operation it runs.
Answer = MasteryDocument | PredictionDocument | RecommendationsDocument
INTENTS: Mapping[
    str, tuple[type[StudentRequest], Callable[[Context, Principal, Any], Awaitable[Answer]]]
] = {
    "calculation": (QueryRequest, mastery_of),
    "prediction": (StudentRequest, prediction_of),
    "recommendations": (StudentRequest, recommendations_of),
}
_log = logger("process")


async def process_intent(request: Request, ctx: Context) -> Response:
    intent: str | None = None
    try:
        principal = await ctx.principal(request)
        raw = await read_json(request, ctx.resources.settings.max_body_bytes)
        intent = validate(IntentEnvelope, raw).intent
        model, operation = INTENTS[intent]
        body = validate(model, {k: v for k, v in raw.items() if k != "intent"})
        admit(ctx, principal, body, Action.READ)
        result = await operation(ctx, principal, body)
    except Problem as problem:
        raise _enveloped(problem, intent) from None
    except Unavailable as exc:
        _log.warning("dependency unavailable", extra={"correlation_id": ctx.correlation_id})
        raise _enveloped(Problem.unavailable(), intent) from exc
    return model_response(
        ProcessDocument(intent=intent, result=result, error=None, correlation_id=ctx.correlation_id)
    )


def _enveloped(problem: Problem, intent: str | None) -> Problem:
    """The same problem, carrying the envelope's members too."""
    return Problem(
        problem.status,
        problem.detail,
        headers=problem.headers,
        **problem.extensions,
        intent=intent,
        result=None,
        error=problem.document(),
    )

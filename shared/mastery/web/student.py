"""The opening every per-student read shares: who asks, for whom, and may they see it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

from mastery.policy import Action
from mastery.store import keys
from mastery.store.records import held_state
from mastery.web.app import model_response, read_body
from mastery.web.auth import authorize_student, precheck
from mastery.web.problems import Problem
from mastery.web.requests import StudentRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Set

    from pydantic import BaseModel
    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.domain import StudentState
    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = [
    "admit",
    "read_student_request",
    "require_visible",
    "student_endpoint",
    "student_state",
]


class _Classed(Protocol):
    @property
    def classes(self) -> Set[str]: ...


R = TypeVar("R", bound=StudentRequest)
D = TypeVar("D", bound=_Classed)


def admit(ctx: Context, principal: Principal, body: StudentRequest, action: Action) -> None:
    """Name the student to the access audit and refuse early (403) before any read."""
    ctx.students.append(body.student_id)
    precheck(principal, action, body.student_id)


async def read_student_request(
    request: Request,
    ctx: Context,
    model: type[R],
    action: Action = Action.READ,
    *,
    read_state: bool = False,
) -> tuple[Principal, R]:
    """Authenticate (401), count (429), parse the body (4xx) and refuse early (403) before
    any read; a 429 comes before any other refusal, as if counted first.

    ``read_state``: read the student's state in the rate limit's Redis call
    (``Context.prefetched``), one round trip instead of two.
    """
    principal = ctx.authenticate(request)
    try:
        body = await read_body(request, model, ctx.resources.settings.max_body_bytes)
        admit(ctx, principal, body, action)
    except Problem:
        await ctx.count(principal)
        raise
    state = keys.state(principal.tenant, body.student_id) if read_state else None
    await ctx.count(principal, read=state)
    return principal, body


async def student_state(ctx: Context, principal: Principal, student: str) -> StudentState | None:
    """The student's state (``None``: nothing held): the one read along with the rate limit
    (an endpoint made with ``read_state``), else read now."""
    read = ctx.prefetched(keys.state(principal.tenant, student))
    if read is None:
        return await ctx.resources.store.load(principal.tenant, student)
    return held_state(read)


def student_endpoint(
    model: type[R],
    operation: Callable[[Context, Principal, R], Awaitable[BaseModel]],
    action: Action = Action.READ,
    *,
    read_state: bool = False,
) -> Callable[[Request, Context], Awaitable[Response]]:
    """The HTTP handler of a per-student operation: admit the request, answer its document."""

    async def handle(request: Request, ctx: Context) -> Response:
        principal, body = await read_student_request(
            request, ctx, model, action, read_state=read_state
        )
        return model_response(await operation(ctx, principal, body))

    return handle


def require_visible(
    principal: Principal, student_id: str, found: D | None, action: Action = Action.READ
) -> D:
    """``found`` (the student's data), if the caller may see it.

    404 when the caller's tenant holds nothing for the student (``found`` is None), 403
    when the policy does not let the caller see them (decided on ``found.classes``).
    """
    if found is None:
        raise Problem(404, "no mastery data for this student")
    authorize_student(principal, student_id, found.classes, action)
    return found

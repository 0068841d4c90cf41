"""The opening every per-student read shares: who asks, for whom, and may they see it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from mastery.events.models import EventId
from mastery.policy import Action
from mastery.web.app import read_body
from mastery.web.auth import authorize_student, precheck
from mastery.web.problems import Problem

if TYPE_CHECKING:
    from collections.abc import Set

    from starlette.requests import Request

    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["StudentRequest", "read_student_request", "require_visible"]


class StudentRequest(BaseModel):
    """A body naming one student: ``{"student_id": "s1"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student_id: EventId


class _Classed(Protocol):
    @property
    def classes(self) -> Set[str]: ...


R = TypeVar("R", bound=StudentRequest)
D = TypeVar("D", bound=_Classed)


async def read_student_request(
    request: Request, ctx: Context, model: type[R], action: Action = Action.READ
) -> tuple[Principal, R]:
    """Authenticate (401/429), parse the body (4xx) and refuse early (403) before any read.

    The student is named to the access audit as soon as the body is known.
    """
    principal = await ctx.principal(request)
    body = await read_body(request, model, ctx.resources.settings.max_body_bytes)
    ctx.students.append(body.student_id)
    precheck(principal, action, body.student_id)
    return principal, body


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

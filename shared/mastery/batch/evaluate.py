"""Each student of a batch: their mastery document, or why there is none.

One function for the synchronous answer and the worker, so both give exactly what
``POST /mastery/query`` gives for each student, under the same policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from mastery.documents import mastery_document
from mastery.domain import explain
from mastery.domain.batch import BatchSummary, StudentError, summarize
from mastery.policy import Action, allowed

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from mastery.domain import ScoringModel, StudentState
    from mastery.policy import Role
    from mastery.ports import Figures

__all__ = ["Result", "error_result", "evaluate", "stored_figures", "tally"]

Result = dict[str, object]
"""``{"student_id", "result": <mastery document>}`` or ``{"student_id", "error", "detail"}``."""

_DETAILS = {
    StudentError.NOT_FOUND: "no mastery data for this student",
    StudentError.FORBIDDEN: "the caller may not read this student's data",
    StudentError.TIMEOUT: "the batch's deadline passed before this student was reached",
}


def error_result(student_id: str, error: StudentError) -> Result:
    return {"student_id": student_id, "error": error.value, "detail": _DETAILS[error]}


def evaluate(
    student_ids: Sequence[str],
    states: Sequence[StudentState | None],
    *,
    tenant: str,
    role: Role,
    subject: str,
    classes: frozenset[str],
    model: ScoringModel,
) -> list[Result]:
    """Results in ``student_ids`` order; ``states`` are theirs (``None``: nothing held).

    The policy is ``mastery-query``'s for each student: a teacher's student outside
    their classes is a ``forbidden`` result, not a refusal of the whole batch.
    """
    out: list[Result] = []
    for student, state in zip(student_ids, states, strict=True):
        if state is None:
            out.append(error_result(student, StudentError.NOT_FOUND))
        elif not allowed(role, subject, classes, Action.BATCH, student, state.classes):
            out.append(error_result(student, StudentError.FORBIDDEN))
        else:
            doc = mastery_document(student, tenant, state, explain(state, model))
            out.append({"student_id": student, "result": doc})
    return out


def tally(results: Iterable[Result], model: ScoringModel) -> tuple[int, int, BatchSummary]:
    """(succeeded, failed, summary over the succeeded students' mastery)."""
    masteries: list[float] = []
    failed = 0
    for r in results:
        doc = r.get("result")
        if isinstance(doc, dict):
            masteries.append(float(doc["mastery"]))
        else:
            failed += 1
    return len(masteries), failed, summarize(masteries, model)


def stored_figures(
    stored: Mapping[str, bytes],
    model: ScoringModel,
    known: Mapping[str, tuple[bytes, Result]] | None = None,
) -> Figures:
    """What a final record keeps of a batch's stored results (student -> JSON).

    ``known``: results already parsed, each with the JSON stored for it; those still
    stored as they were are not parsed again (a run's own: 1,000 parsed take ~4 ms).
    """
    known = known or {}
    every: list[Result] = []
    for student, raw in stored.items():
        mine = known.get(student)
        every.append(mine[1] if mine is not None and mine[0] == raw else orjson.loads(raw))
    succeeded, failed, summary = tally(every, model)
    return succeeded, failed, summary.as_dict()

"""``POST /gdpr/export`` and ``POST /gdpr/erase``: a student's rights over their data.

Export gives everything held about the student: state, daily history, the audit of their
events, what is kept to count each event once (xAPI statement records, event-id hashes)
and their results in batch runs still kept. Erasure deletes every key of the student and
their cohort index entries in one atomic script, leaves a tombstone (a replayed older
event is refused, not re-applied), then removes their entries from the event audit and
puts ``not_found`` in place of their batch results (recounting each finished batch).
Both are idempotent; an erasure interrupted after the atomic step is finished by
sending it again.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import orjson

from mastery.batch.evaluate import error_result, stored_figures
from mastery.domain import day_mastery, explain
from mastery.domain.batch import StudentError
from mastery.events.notifications import change_data
from mastery.policy import Action
from mastery.web.app import write_access
from mastery.web.auth import authorize_student
from mastery.web.problems import Problem
from mastery.web.query import mastery_document
from mastery.web.requests import StudentRequest
from mastery.web.responses import Aggregate as AggregateDocument
from mastery.web.responses import (
    Aggregates,
    ErasureDocument,
    ExportDocument,
    ExportedDay,
    ExportedEvent,
    ExportedStatement,
    MasteryDocument,
)
from mastery.web.student import student_endpoint

if TYPE_CHECKING:
    from mastery.domain import Aggregate, DaySnapshot, ScoringModel
    from mastery.store import AuditEntry, StatementRecord
    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["erase_student", "erasure_of", "export_of", "export_student"]


async def export_of(ctx: Context, principal: Principal, body: StudentRequest) -> ExportDocument:
    """Everything held about the student."""
    student = body.student_id
    store, model = ctx.resources.store, ctx.resources.model
    state = await store.load(principal.tenant, student)
    if state is not None:
        authorize_student(principal, student, state.classes, Action.EXPORT)
    history = await store.history(principal.tenant, student)
    events = await store.audit_entries(principal.tenant, student)
    statements, hashes = await store.bookkeeping(principal.tenant, student, ctx.resources.clock())
    batch_results = {
        batch: doc
        for batch, raw in (
            await ctx.resources.batches.results_of(principal.tenant, student)
        ).items()
        # ``not_found`` holds nothing of theirs (it is what an erasure leaves in its place)
        if (doc := orjson.loads(raw)).get("error") != StudentError.NOT_FOUND
    }
    pending = await store.pending_changes(principal.tenant, student)
    if not (state or history or events or statements or hashes or batch_results or pending):
        raise Problem(404, "no data held for this student")
    return ExportDocument(
        student_id=student,
        tenant=principal.tenant,
        exported_at=ctx.resources.clock().isoformat(),
        mastery=MasteryDocument.model_validate(
            mastery_document(student, principal.tenant, state, explain(state, model))
        )
        if state
        else None,
        classes=sorted(state.classes) if state else [],
        aggregates=Aggregates(
            components={c.value: _aggregate(a) for c, a in state.components.items()},
            areas={f"{c}:{area}": _aggregate(a) for (c, area), a in state.areas.items()},
        )
        if state
        else None,
        history=[_day(d, model) for d in history],
        events=[_audit(entry) for entry in events],
        xapi_statements=[_statement(r) for r in statements],
        event_id_hashes=sorted(map(_hex, hashes)),
        batch_results=batch_results,
        pending_level_changes=[change_data(n) for n in pending],
    )


async def erasure_of(ctx: Context, principal: Principal, body: StudentRequest) -> ErasureDocument:
    """Erase the student: keys and index entries atomically, then their event audit.

    The access audit records the erasure (status 202) before it runs: the record is what
    ``mastery rebuild`` replays, so an erasure the broker could not record is not made
    (503), rather than made and then undone by the next rebuild.
    """
    student = body.student_id
    store, now = ctx.resources.store, ctx.resources.clock()
    await write_access(ctx, _ERASE_ROUTE, 202, at=now)
    deleted, through = await store.erase(principal.tenant, student, now)
    entries = await store.audit_entries(principal.tenant, student, erased_at=through)
    redacted = await store.redact_audit(principal.tenant, [entry_id for entry_id, _ in entries])
    # Their result in each live batch becomes ``not_found``, counted as such in its figures.
    batch_results = await ctx.resources.batches.forget(
        principal.tenant,
        student,
        orjson.dumps(error_result(student, StudentError.NOT_FOUND)),
        partial(stored_figures, model=ctx.resources.model),
    )
    await _replicated(ctx, principal.tenant)
    return ErasureDocument(
        student_id=student,
        tenant=principal.tenant,
        erased_at=now.isoformat(),
        keys_deleted=deleted,
        audit_entries_removed=redacted,
        batch_results_removed=batch_results,
    )


async def _replicated(ctx: Context, tenant: str) -> None:
    """With ``MASTERY_ERASURE_REPLICAS``, answer only once that many replicas hold the
    erasure: a failover to a replica that missed it would bring the student back."""
    settings = ctx.resources.settings
    wanted, wait_ms = settings.erasure_replicas, settings.erasure_wait_ms
    if not wanted:
        return
    acked = await ctx.resources.store.replicated(tenant, wanted, wait_ms)
    if acked < wanted:
        raise Problem.unavailable(
            f"the erasure is done, but {acked} of the {wanted} Redis replicas required "
            f"(MASTERY_ERASURE_REPLICAS) confirmed it within {wait_ms} ms; send it again "
            "(erasing again is harmless)"
        )


export_student = student_endpoint(StudentRequest, export_of, Action.EXPORT)
_ERASE_ROUTE = "POST /gdpr/erase"
erase_student = student_endpoint(StudentRequest, erasure_of, Action.ERASE)


def _aggregate(agg: Aggregate) -> AggregateDocument:
    return AggregateDocument(weighted_sum=agg.weighted_sum, weight=agg.weight, events=agg.count)


def _day(snapshot: DaySnapshot, model: ScoringModel) -> ExportedDay:
    return ExportedDay(
        date=snapshot.day.isoformat(),
        mastery=round(day_mastery(snapshot, model), 4),
        components={c.value: v for c, v in snapshot.scores.items()},
    )


def _audit(entry: AuditEntry) -> ExportedEvent:
    entry_id, fields = entry
    reason = {"reason": fields["reason"]} if "reason" in fields else {}
    return ExportedEvent(
        audit_id=entry_id,
        outcome=fields.get("outcome"),
        **reason,
        event=orjson.loads(fields["event"]) if "event" in fields else None,
    )


def _statement(record: StatementRecord) -> ExportedStatement:
    return ExportedStatement(
        statement_hash=_hex(record.statement_hash),
        date=record.day.isoformat(),
        voided=record.voided,
        component=record.component.value if record.component else None,
        score=record.score,
        area=record.area,
    )


def _hex(event_hash: int) -> str:
    """``keys.event_hash`` as the digest's hex (it is the digest read as a signed integer)."""
    return event_hash.to_bytes(8, "big", signed=True).hex()

"""``POST /batch/mastery`` and ``GET /batch/mastery/{batch_id}``: many students at once.

Up to ``SYNC_MAX`` students (and no ``async``) are answered at once, from one pipelined
Redis read; larger batches (or ``async: true``) are recorded in Redis, sent to the
``<prefix>.<priority>`` topic and run by the batch worker, and their status is read
back by id. ``POST /`` of the batch-worker function takes the same topic's messages
from a KafkaSource or the kafka-connector.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

import orjson

from mastery.batch.evaluate import evaluate, tally
from mastery.batch.messages import BATCH_ID, batch_message, decode_batch
from mastery.domain.batch import BatchStatus, Priority
from mastery.errors import InvalidEvent, Unavailable
from mastery.events.kafka import dead_letter, dead_line
from mastery.fields import ID_PATTERN, is_id
from mastery.logs import logger
from mastery.metrics import BATCHES_SUBMITTED, DEAD_LETTERS, dlq_reason
from mastery.policy import POLICY, Action, Scope, may_act
from mastery.ports import BatchRecord
from mastery.topics import batch_topic
from mastery.web.app import json_response, model_response, read_body, read_limited
from mastery.web.events import record_from_http
from mastery.web.problems import Problem
from mastery.web.requests import MAX_STUDENTS, BatchRequest
from mastery.web.responses import (
    BatchAccepted,
    BatchDone,
    BatchStatusDocument,
    EventOutcome,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["MAX_STUDENTS", "SYNC_MAX", "batch_event", "batch_status", "submit_batch"]

SYNC_MAX = 100
_NAMED = 100  # at most this many offending ids are named in a 422
# A full batch of the longest ids, whatever MASTERY_MAX_BODY_BYTES says for other bodies:
# 64 characters (ID_PATTERN) and up to 32 bytes of quotes, comma and whitespace each
# (``json.dumps(indent=4)`` takes 12), 4 KB for the rest of the body.
_BATCH_BODY = MAX_STUDENTS * (64 + 32) + 4096


def _check_ids(ids: list[str]) -> None:
    """422 naming what is wrong: too many ids, malformed ones, duplicates."""
    if len(ids) > MAX_STUDENTS:
        raise Problem(
            422,
            f"at most {MAX_STUDENTS} student ids per batch, got {len(ids)}",
            errors=[{"field": "student_ids", "message": f"more than {MAX_STUDENTS} ids"}],
        )
    malformed = [{"index": i, "id": s[:70]} for i, s in enumerate(ids) if not is_id(s)]
    duplicates = sorted(s for s, n in Counter(ids).items() if n > 1 and is_id(s))
    if not malformed and not duplicates:
        return
    errors = []
    if malformed:
        errors.append({"field": "student_ids", "message": f"{len(malformed)} malformed id(s)"})
    if duplicates:
        errors.append({"field": "student_ids", "message": f"{len(duplicates)} duplicated id(s)"})
    raise Problem(
        422,
        "; ".join(e["message"] for e in errors) + f" (ids must match {ID_PATTERN})",
        errors=errors,
        malformed_ids=malformed[:_NAMED],
        duplicate_ids=duplicates[:_NAMED],
    )


def _forbid_students(principal: Principal) -> None:
    if not may_act(principal.role, Action.BATCH):
        raise Problem(403, f"a {principal.role} may not run batches")


async def submit_batch(request: Request, ctx: Context) -> Response:
    principal = await ctx.principal(request)
    _forbid_students(principal)
    res = ctx.resources
    limit = max(res.settings.max_body_bytes, _BATCH_BODY)
    body = await read_body(request, BatchRequest, limit)
    _check_ids(body.student_ids)
    ids = body.student_ids
    ctx.students.extend(ids)
    if len(ids) <= SYNC_MAX and not body.run_async:
        states = await res.store.load_many(principal.tenant, ids)
        results = evaluate(
            ids,
            states,
            tenant=principal.tenant,
            role=principal.role,
            subject=principal.subject,
            classes=principal.classes,
            model=res.model,
        )
        succeeded, failed, summary = tally(results, res.model)
        return model_response(
            BatchDone(
                batch_id=None,
                tenant=principal.tenant,
                status=BatchStatus.DONE,
                priority=body.priority,
                total=len(ids),
                succeeded=succeeded,
                failed=failed,
                summary=summary.as_dict(),
                results=results,
            )
        )
    return await _enqueue(ctx, principal, body)


async def _enqueue(ctx: Context, principal: Principal, body: BatchRequest) -> Response:
    res, settings = ctx.resources, ctx.resources.settings
    batches, now = res.batches, res.clock()
    now_ms = _ms(now)
    record = BatchRecord(
        batch_id=uuid.uuid4().hex,
        tenant=principal.tenant,
        priority=body.priority,
        student_ids=tuple(body.student_ids),
        submitted_by=principal.subject,
        role=principal.role,
        classes=principal.classes,
        submitted_at=now_ms,
        deadline_at=now_ms + 1000 * (body.deadline_s or settings.batch_deadline_s),
    )
    # The record first: a worker that gets the message always finds it.
    await batches.create(record)
    prefix, tenant = settings.batch_topic_prefix, record.tenant
    message = batch_message(prefix, body.priority, tenant, record.batch_id, now, ctx.function)
    try:
        await res.publisher.publish([message])
        BATCHES_SUBMITTED.labels(body.priority.value).inc()
    except Unavailable:
        with contextlib.suppress(Unavailable):  # else it expires; nobody was told its id
            await batches.delete(record.tenant, record.batch_id)
        raise
    location = f"/batch/mastery/{record.batch_id}"
    response = model_response(
        BatchAccepted(
            batch_id=record.batch_id,
            tenant=record.tenant,
            status=BatchStatus.QUEUED,
            priority=body.priority,
            total=len(record.student_ids),
            deadline_at=_iso(record.deadline_at),
            status_url=location,
        ),
        status=202,
    )
    response.headers["Location"] = location
    return response


async def batch_status(request: Request, ctx: Context) -> Response:
    principal = await ctx.principal(request)
    _forbid_students(principal)
    batch_id = ctx.path_params.get("batch_id", "")
    batches, runner = ctx.resources.batches, ctx.resources.runner
    record, processed = await _read(ctx, principal, batch_id)
    if runner.overdue(record):
        # No live worker will finish it: queued past its deadline (its message may never
        # come), or running well past it (its worker stopped). Closed here as a worker
        # would, so it does not read queued or running for 24 h.
        await runner.expire(principal.tenant, batch_id)
        record, processed = await _read(ctx, principal, batch_id)
    total = len(record.student_ids)
    final: dict[str, Any] = {}
    if record.status.final:
        final = {
            "succeeded": record.succeeded,
            "failed": record.failed,
            "summary": record.summary,
            "results": [],  # spliced in below
        }
        if record.reason:
            final["reason"] = record.reason
    answer = BatchStatusDocument(
        batch_id=batch_id,
        tenant=principal.tenant,
        status=record.status,
        priority=record.priority,
        total=total,
        processed=processed,
        progress=round(processed / total, 4) if total else 1.0,
        submitted_at=_iso(record.submitted_at),
        started_at=_iso(record.started_at),
        finished_at=_iso(record.finished_at),
        deadline_at=_iso(record.deadline_at),
        **final,
    )
    if not record.status.final:
        return model_response(answer)
    ctx.students.extend(record.student_ids)
    stored = await batches.results(principal.tenant, batch_id, record.student_ids)
    # Each result is stored as JSON (the worker's mastery document or error): spliced in as
    # it is, not parsed and serialized again (1000 results: 0.2 ms rather than 5-10 ms).
    doc = answer.model_dump(mode="json", by_alias=True, exclude_unset=True)
    doc["results"] = [orjson.Fragment(r) for r in stored]
    return json_response(doc)


async def _read(ctx: Context, principal: Principal, batch_id: str) -> tuple[BatchRecord, int]:
    """The batch and how many students have a result; 404 unless the caller may read it."""
    record, processed = (
        await ctx.resources.batches.get_with_progress(principal.tenant, batch_id)
        if BATCH_ID.fullmatch(batch_id)
        else (None, 0)
    )
    # A teacher sees the batches they submitted; an admin every batch of the tenant.
    # Another's batch is answered like one that does not exist.
    if record is None or not (
        POLICY[Action.BATCH][principal.role] is Scope.TENANT
        or (record.role is principal.role and record.submitted_by == principal.subject)
    ):
        raise Problem(404, "no such batch (batches are kept 24 h)")
    return record, processed


async def batch_event(request: Request, ctx: Context) -> Response:
    """A batch message from KafkaSource / the kafka-connector: run the batch, then 200."""
    res = ctx.resources
    body = await read_limited(request, res.settings.max_event_bytes)
    default_topic = batch_topic(res.settings.batch_topic_prefix, Priority.NORMAL)
    record = record_from_http(dict(request.headers), body, default_topic)
    try:
        tenant, batch_id = decode_batch(record)
    except InvalidEvent as exc:
        dead = dead_letter(record, exc.reason, res.clock(), ctx.function)
        await res.publisher.publish([dead])
        logger(ctx.function).warning("event dead-lettered", extra=dead_line(record, exc.reason))
        DEAD_LETTERS.labels(dlq_reason(exc.reason)).inc()
        return model_response(EventOutcome(outcome="rejected", reason=exc.reason))
    outcome = await res.runner.run(tenant, batch_id)
    return model_response(EventOutcome(outcome=outcome.value, batch_id=batch_id))


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@overload
def _iso(ms: int) -> str: ...
@overload
def _iso(ms: int | None) -> str | None: ...
def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms is not None else None

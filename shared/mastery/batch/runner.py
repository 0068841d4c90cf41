"""Runs one batch: chunk by chunk, resumable, within its deadline.

Per chunk: one read of the students' states (the next chunk's read already sent, so
Redis works while this one is scored), then their results written in one atomic step,
keyed by student. A run that starts over (after a crash, or because the message came
again) skips the students that already have a result, so nothing is lost and nothing
counted twice. Past the deadline the students not reached get a ``timeout`` result and
the batch is closed: it never hangs. The final counts and summary are those of the
results stored as the record is written, so a student erased during the run counts as
``not_found`` whether the erasure came before their result was stored or after.

A batch no live worker will finish (queued past its deadline, or running well past
it: its worker stopped) is closed by ``expire``, as a worker would close it, when its
status is read. The first to close a batch wins; a run that finds it closed stops.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import orjson

from mastery import tracing
from mastery.batch.evaluate import error_result, evaluate, stored_figures
from mastery.domain.batch import BatchStatus, StudentError
from mastery.metrics import BATCH_DURATION, BATCH_STUDENTS, BATCHES, BATCHES_RUNNING
from mastery.ports import utc_now

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from mastery.batch.evaluate import Result
    from mastery.domain import ScoringModel
    from mastery.ports import BatchRecord, BatchRepository, Clock, Figures, StudentReads

    #: What this run stored, by student: the JSON and the result it encodes.
    Kept = dict[str, tuple[bytes, Result]]

__all__ = ["LAST_CHUNK", "BatchRunner", "RunOutcome"]

#: How long a live worker may take past its deadline: it checks the deadline before
#: each chunk, so one that checked just before it still scores and stores that chunk,
#: then closes the batch. The functions' timeouts allow the same (330 s for a deadline
#: of 300 s: "30 s to store the last chunk and answer", infra/knative).
LAST_CHUNK = timedelta(seconds=30)

_LATE = "the deadline passed before a worker began"
_STOPPED = "the worker stopped before finishing"


class RunOutcome(StrEnum):
    DONE = "done"  # finished now (final status written)
    ALREADY_FINAL = "already_final"  # finished before (a redelivered message) or meanwhile
    MISSING = "missing"  # no such batch (expired, or never written)
    YIELDED = "yielded"  # handed back between chunks; progress is kept, run it again later


class BatchRunner:
    """Args:
    states: where the students' states are read, a chunk at a time.
    batches: the batch records and results.
    chunk: students per round trip (and per progress step).
    clock: the time the deadline is checked against.
    observer: awaited after each chunk is stored, with the batch id and how many
        students this run has finished (progress logs, tests that crash a run mid-way).
    """

    def __init__(
        self,
        states: StudentReads,
        batches: BatchRepository,
        model: ScoringModel,
        chunk: int = 250,
        clock: Clock = utc_now,
        observer: Callable[[str, int], Awaitable[None]] | None = None,
    ) -> None:
        self._states = states
        self._batches = batches
        self._model = model
        self._chunk = chunk
        self._clock = clock
        self._observer = observer

    def _now_ms(self) -> int:
        return int(self._clock().timestamp() * 1000)

    @property
    def grace(self) -> timedelta:
        """How long past its deadline a running batch may still have a live worker: the
        last chunk's time, on a clock that may be behind this one by as much as the
        engine lets hosts' clocks disagree (the model's ``max_clock_skew``, 5 min, the
        margin of the erasure check below too)."""
        return self._model.max_clock_skew + LAST_CHUNK

    def overdue(self, record: BatchRecord) -> bool:
        """Whether no live worker will finish ``record``: queued at or past its deadline
        (a worker starting it would fail it), or running ``grace`` past it (a live worker
        checks the deadline before every chunk: it would have closed it by then)."""
        late = self._now_ms() - record.deadline_at
        if record.status is BatchStatus.QUEUED:
            return late >= 0
        if record.status is BatchStatus.RUNNING:
            return timedelta(milliseconds=late) >= self.grace
        return False

    async def run(
        self,
        tenant: str,
        batch_id: str,
        should_yield: Callable[[], Awaitable[bool]] | None = None,
    ) -> RunOutcome:
        """Run (or resume) a batch to its final status.

        ``should_yield`` is asked between chunks (never before the first, so every run
        makes progress); when it says so the run stops and returns ``YIELDED``.
        Raises:
            Unavailable: Redis is down; what was stored stays, run it again.
        """
        started = time.perf_counter()
        BATCHES_RUNNING.inc()
        try:
            with tracing.span("mastery.batch_run", attributes={"mastery.batch_id": batch_id}):
                outcome = await self._run(tenant, batch_id, should_yield)
        except Exception:
            BATCHES.labels("error").inc()
            raise
        finally:
            BATCHES_RUNNING.dec()
        BATCHES.labels(outcome.value).inc()
        if outcome in (RunOutcome.DONE, RunOutcome.YIELDED):
            BATCH_DURATION.observe(time.perf_counter() - started)
        return outcome

    async def _run(
        self,
        tenant: str,
        batch_id: str,
        should_yield: Callable[[], Awaitable[bool]] | None,
    ) -> RunOutcome:
        prior = await self._batches.start(tenant, batch_id, self._now_ms())
        if prior is None:
            return RunOutcome.MISSING
        if prior.final:
            return RunOutcome.ALREADY_FINAL
        record = await self._batches.get(tenant, batch_id)
        if record is None:  # expired between the two calls
            return RunOutcome.MISSING
        if _begun_late(record):
            return _outcome(await self._fail_late(record))

        # Results read before a student's erasure must not be stored after it; the margin
        # covers clocks of the eraser's and this host that disagree.
        erased_since = self._now_ms() - int(self._model.max_clock_skew.total_seconds() * 1000)
        earlier = await self._batches.finished_students(tenant, batch_id)
        kept: Kept = {}
        todo = [s for s in record.student_ids if s not in earlier]
        chunks = [todo[i : i + self._chunk] for i in range(0, len(todo), self._chunk)]
        position = 0
        async with aclosing(self._states.read_ahead(tenant, chunks)) as reads:
            async for part, states in reads:
                if self._now_ms() >= record.deadline_at:
                    break
                if position and should_yield is not None and await should_yield():
                    return RunOutcome.YIELDED
                results = evaluate(
                    part,
                    states,
                    tenant=tenant,
                    role=record.role,
                    subject=record.submitted_by,
                    classes=record.classes,
                    model=self._model,
                )
                if not await self._save(record, kept, results, erased_since):
                    return RunOutcome.ALREADY_FINAL
                position += len(part)
                BATCH_STUDENTS.inc(len(part))
                if self._observer is not None:
                    await self._observer(batch_id, position)
        return _outcome(await self._close(record, kept, todo[position:], BatchStatus.DONE))

    async def expire(self, tenant: str, batch_id: str) -> bool:
        """Close a batch no live worker will finish (``overdue``), as a worker would have
        closed it at its deadline; True when this call did.

        For the status read: a batch whose message never reaches a worker (lost with the
        broker's data) would otherwise stay ``queued``, and one whose worker stopped (killed,
        its node lost) with its message lost or not delivered again ``running``, until it
        expires. A queued one fails (every student ``timeout``); a running one is done,
        its students without a result ``timeout``, with a reason saying why.
        Raises:
            Unavailable: Redis is down; nothing or the whole closing was written.
        """
        record = await self._batches.get(tenant, batch_id)
        if record is None or not self.overdue(record):
            return False
        if record.status is BatchStatus.QUEUED:
            # The queued -> running step is atomic: a worker starting it meanwhile runs it
            # (past its deadline: fails it) and this call does nothing, or the reverse.
            now = self._now_ms()
            if await self._batches.start(tenant, batch_id, now) is not BatchStatus.QUEUED:
                return False
            closed = await self._fail_late(record)
        else:
            closed = await self._close_stopped(record)
        if closed:
            BATCHES.labels(RunOutcome.DONE.value).inc()
        return closed

    async def _close_stopped(self, record: BatchRecord) -> bool:
        """Close a running batch whose worker stopped, as that worker would have at its
        deadline: ``done``, its students without a result ``timeout``. Should the worker
        live after all, a chunk it stores comes before (kept and counted) or not at all."""
        if _begun_late(record):  # whoever began it was failing it
            return await self._fail_late(record)
        return await self._close(record, {}, record.student_ids, BatchStatus.DONE, _STOPPED)

    async def _fail_late(self, record: BatchRecord) -> bool:
        """Fail a batch begun past its deadline: every student ``timeout`` (none was run)."""
        return await self._close(record, {}, record.student_ids, BatchStatus.FAILED, _LATE)

    async def _save(
        self,
        record: BatchRecord,
        kept: Kept,
        results: Sequence[Result],
        erased_since: int | None = None,
    ) -> bool:
        """Store results, and add them to ``kept`` as stored; False, storing nothing, when
        the batch is final (another run, or a status read, closed it: this run stops).

        A student erased at or after ``erased_since`` (ms) is stored as ``not_found``: the
        result was read before the erasure, and storing it would bring the data back.
        """
        encoded = {str(r["student_id"]): (orjson.dumps(r), r) for r in results}
        to_store = {s: raw for s, (raw, _) in encoded.items()}
        refused = await self._batches.save_results(
            record.tenant, record.batch_id, to_store, erased_since
        )
        if refused is None:
            return False
        kept.update((s, pair) for s, pair in encoded.items() if s not in refused)
        if refused:
            stand_ins = [error_result(s, StudentError.NOT_FOUND) for s in refused]
            return await self._save(record, kept, stand_ins)
        return True

    async def _close(
        self,
        record: BatchRecord,
        kept: Kept,
        unreached: Sequence[str],
        status: BatchStatus,
        reason: str | None = None,
    ) -> bool:
        """Write the final status, with a ``timeout`` for each of ``unreached`` that still
        has no result, in one step; False when the batch was final already (another run,
        or a status read, closed it first: nothing written)."""
        timeouts: Kept = {str(r["student_id"]): (orjson.dumps(r), r) for r in _timeouts(unreached)}
        known = {**kept, **timeouts}

        # The figures are the stored results' (an earlier run's, an erasure's stand-ins
        # too); this run's own and the timeouts are not parsed again.
        def figures(stored: Mapping[str, bytes]) -> Figures:
            return stored_figures(stored, self._model, known)

        return await self._batches.finish(
            record.tenant,
            record.batch_id,
            status=status,
            finished_at=self._now_ms(),
            figures=figures,
            reason=reason,
            unreached={s: raw for s, (raw, _) in timeouts.items()},
        )


def _begun_late(record: BatchRecord) -> bool:
    """Whether ``record`` was begun at or after its deadline: whoever began it (a worker,
    a status read) was failing it, and no student was run."""
    return record.started_at is None or record.started_at >= record.deadline_at


def _outcome(closed: bool) -> RunOutcome:
    return RunOutcome.DONE if closed else RunOutcome.ALREADY_FINAL


def _timeouts(students: Sequence[str]) -> list[Result]:
    return [error_result(s, StudentError.TIMEOUT) for s in students]

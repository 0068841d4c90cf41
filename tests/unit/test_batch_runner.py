"""``BatchRunner`` on in-memory fakes of its ports: order, resume, deadline, yielding.

What only the real servers can show (results keyed by student in Redis, the erasure
check in Lua, a worker killed mid-batch, the priority topics) stays in
``tests/integration/test_batch.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from mastery.batch.runner import BatchRunner, RunOutcome
from mastery.domain import DEFAULT_MODEL, Aggregate, Component, StudentState
from mastery.domain.batch import BatchStatus, Priority
from mastery.policy import Role
from mastery.ports import BatchRecord
from tests.fakes import FakeBatchRepository, FakeClock, FakeStudentReads

NOW = datetime(2030, 3, 1, 12, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
TENANT = "school-1"
#: ``BatchRunner.grace`` with the default model: its 5 min of clock skew and 30 s for the
#: last chunk (docs/api.md).
GRACE = timedelta(minutes=5, seconds=30)


def _state(score: float) -> StudentState:
    return StudentState({Component.QUIZ: Aggregate(score, 1.0, 1)}, class_days={"c1": 0})


def _setup(
    students: int, *, chunk: int = 10, deadline_s: int = 60, missing: frozenset[str] = frozenset()
) -> tuple[BatchRunner, FakeStudentReads, FakeBatchRepository, FakeClock, list[str]]:
    ids = [f"s{i}" for i in range(students)]
    reads = FakeStudentReads(
        {(TENANT, s): _state(i / students) for i, s in enumerate(ids) if s not in missing}
    )
    batches = FakeBatchRepository()
    batches.add(
        BatchRecord(
            batch_id="b1",
            tenant=TENANT,
            priority=Priority.NORMAL,
            student_ids=tuple(ids),
            submitted_by="a1",
            role=Role.ADMIN,
            classes=frozenset(),
            submitted_at=NOW_MS,
            deadline_at=NOW_MS + deadline_s * 1000,
        )
    )
    clock = FakeClock(NOW)
    runner = BatchRunner(reads, batches, DEFAULT_MODEL, chunk=chunk, clock=clock)
    return runner, reads, batches, clock, ids


def _results(batches: FakeBatchRepository, ids: list[str]) -> list[dict[str, object]]:
    """The stored result of each of ``ids``, in that order."""
    stored = batches.stored[TENANT, "b1"]
    return [orjson.loads(stored[s]) for s in ids]


async def test_every_student_gets_a_result_in_order_and_the_record_is_final() -> None:
    runner, reads, batches, _, ids = _setup(25, missing=frozenset({"s7"}))
    assert await runner.run(TENANT, "b1") is RunOutcome.DONE
    assert [len(r) for r in reads.reads] == [10, 10, 5]
    results = _results(batches, ids)
    assert [r["student_id"] for r in results] == ids
    assert results[7]["error"] == "not_found"
    record = batches.records[TENANT, "b1"]
    assert (record.status, record.succeeded, record.failed) == (BatchStatus.DONE, 24, 1)
    assert record.started_at == record.finished_at == NOW_MS
    assert await runner.run(TENANT, "b1") is RunOutcome.ALREADY_FINAL


async def test_an_unknown_batch_is_missing() -> None:
    runner, *_ = _setup(1)
    assert await runner.run(TENANT, "nope") is RunOutcome.MISSING


async def test_a_resumed_run_reads_only_the_students_without_a_result() -> None:
    runner, reads, batches, _, ids = _setup(30)
    earlier = {s: orjson.dumps({"student_id": s, "earlier": True}) for s in ids[:12]}
    batches.stored[TENANT, "b1"] = dict(earlier)
    assert await runner.run(TENANT, "b1") is RunOutcome.DONE
    assert [s for chunk in reads.reads for s in chunk] == ids[12:]
    results = _results(batches, ids)
    assert [r["student_id"] for r in results] == ids
    assert all(r.get("earlier") for r in results[:12])
    record = batches.records[TENANT, "b1"]
    assert (record.succeeded, record.failed) == (18, 12)  # the earlier 12 hold no mastery


async def test_past_the_deadline_the_students_not_reached_time_out() -> None:
    _, reads, batches, clock, ids = _setup(25, deadline_s=60)

    async def late_after_the_first_chunk(_: str, done: int) -> None:
        clock.advance(timedelta(seconds=61))

    observer = late_after_the_first_chunk
    runner = BatchRunner(reads, batches, DEFAULT_MODEL, chunk=10, clock=clock, observer=observer)
    assert await runner.run(TENANT, "b1") is RunOutcome.DONE
    errors = [r.get("error") for r in _results(batches, ids)]
    assert errors == [None] * 10 + ["timeout"] * 15
    record = batches.records[TENANT, "b1"]
    assert (record.status, record.succeeded, record.failed) == (BatchStatus.DONE, 10, 15)
    assert record.summary is not None
    assert record.summary["count"] == 10  # the summary is over the students with a score


async def test_a_batch_queued_past_its_deadline_fails_without_reading_anyone() -> None:
    runner, reads, batches, clock, ids = _setup(5, deadline_s=1)
    clock.advance(timedelta(seconds=1))
    assert await runner.run(TENANT, "b1") is RunOutcome.DONE
    assert reads.reads == []
    assert {r["error"] for r in _results(batches, ids)} == {"timeout"}
    record = batches.records[TENANT, "b1"]
    assert record.status is BatchStatus.FAILED
    assert record.reason is not None
    assert "deadline" in record.reason


async def test_expire_fails_a_queued_batch_past_its_deadline_as_a_worker_would() -> None:
    runner, reads, batches, clock, ids = _setup(5, deadline_s=1)
    assert await runner.expire(TENANT, "b1") is False  # before the deadline: left queued
    assert batches.records[TENANT, "b1"].status is BatchStatus.QUEUED
    clock.advance(timedelta(seconds=1))
    assert await runner.expire(TENANT, "b1") is True
    assert reads.reads == []
    assert {r["error"] for r in _results(batches, ids)} == {"timeout"}
    record = batches.records[TENANT, "b1"]
    assert (record.status, record.succeeded, record.failed) == (BatchStatus.FAILED, 0, 5)
    assert record.reason == "the deadline passed before a worker began"
    assert await runner.expire(TENANT, "b1") is False  # final already
    assert await runner.run(TENANT, "b1") is RunOutcome.ALREADY_FINAL
    assert await runner.expire(TENANT, "nope") is False


async def test_expire_leaves_a_batch_a_worker_started() -> None:
    runner, _, batches, clock, _ = _setup(5, deadline_s=1)
    await batches.start(TENANT, "b1", NOW_MS)  # a worker began, then went quiet
    clock.advance(timedelta(seconds=1))
    assert await runner.expire(TENANT, "b1") is False
    assert batches.records[TENANT, "b1"].status is BatchStatus.RUNNING


class _Killed(Exception):
    """The worker's process dies: nothing after this point runs."""


async def _killed_after_the_first_chunk(
    reads: FakeStudentReads, batches: FakeBatchRepository, clock: FakeClock
) -> None:
    async def killed(_: str, done: int) -> None:
        raise _Killed

    runner = BatchRunner(reads, batches, DEFAULT_MODEL, chunk=10, clock=clock, observer=killed)
    with pytest.raises(_Killed):
        await runner.run(TENANT, "b1")


async def test_expire_closes_a_batch_its_worker_left_running_as_that_worker_would() -> None:
    runner, reads, batches, clock, ids = _setup(25, deadline_s=60)
    await _killed_after_the_first_chunk(reads, batches, clock)
    earlier = dict(batches.stored[TENANT, "b1"])
    assert sorted(earlier) == sorted(ids[:10])

    clock.advance(timedelta(seconds=60) + GRACE - timedelta(milliseconds=1))
    assert await runner.expire(TENANT, "b1") is False  # a live worker may still store a chunk
    assert batches.records[TENANT, "b1"].status is BatchStatus.RUNNING
    clock.advance(timedelta(milliseconds=1))
    assert await runner.expire(TENANT, "b1") is True

    stored = batches.stored[TENANT, "b1"]
    assert {s: stored[s] for s in ids[:10]} == earlier  # kept as they were
    assert [r.get("error") for r in _results(batches, ids)] == [None] * 10 + ["timeout"] * 15
    record = batches.records[TENANT, "b1"]
    assert (record.status, record.succeeded, record.failed) == (BatchStatus.DONE, 10, 15)
    assert record.summary is not None
    assert record.summary["count"] == 10
    assert record.reason == "the worker stopped before finishing"
    assert record.finished_at == int(clock.now.timestamp() * 1000)
    assert await runner.expire(TENANT, "b1") is False  # final already
    assert await runner.run(TENANT, "b1") is RunOutcome.ALREADY_FINAL  # its message, late
    assert runner.grace == GRACE


async def test_a_running_batch_begun_past_its_deadline_is_failed_by_expire_or_a_run() -> None:
    """Whoever began it (a worker, a status read) was failing it, and stopped."""
    for close in ("expire", "run"):
        runner, reads, batches, clock, ids = _setup(5, deadline_s=1)
        await batches.start(TENANT, "b1", NOW_MS + 1000)
        clock.advance(timedelta(seconds=1) + GRACE)
        if close == "expire":
            assert await runner.expire(TENANT, "b1") is True
        else:
            assert await runner.run(TENANT, "b1") is RunOutcome.DONE
        assert reads.reads == []
        record = batches.records[TENANT, "b1"]
        assert (record.status, record.succeeded, record.failed) == (BatchStatus.FAILED, 0, 5)
        assert record.reason == "the deadline passed before a worker began"
        assert {r["error"] for r in _results(batches, ids)} == {"timeout"}


async def test_a_worker_that_outlives_its_closing_stores_nothing_more_and_stops() -> None:
    """Its clock behind the reader's by more than the grace allows: it stores a chunk
    after a status read closed the batch. Refused, so the figures stay the results'."""
    _, reads, batches, worker_clock, ids = _setup(25, deadline_s=60)
    reader_clock = FakeClock(NOW + timedelta(seconds=60) + GRACE)
    reader = BatchRunner(reads, batches, DEFAULT_MODEL, chunk=10, clock=reader_clock)
    closed: list[bool] = []

    async def status_read_after_the_first_chunk(_: str, done: int) -> None:
        closed.append(await reader.expire(TENANT, "b1"))

    observer = status_read_after_the_first_chunk
    worker = BatchRunner(
        reads, batches, DEFAULT_MODEL, chunk=10, clock=worker_clock, observer=observer
    )
    assert await worker.run(TENANT, "b1") is RunOutcome.ALREADY_FINAL
    assert closed == [True]
    assert len(reads.reads) == 2  # it read and scored the second chunk: not stored
    assert [r.get("error") for r in _results(batches, ids)] == [None] * 10 + ["timeout"] * 15
    record = batches.records[TENANT, "b1"]
    assert (record.status, record.succeeded, record.failed) == (BatchStatus.DONE, 10, 15)
    assert record.reason == "the worker stopped before finishing"


async def test_a_run_whose_batch_another_closed_stores_nothing_more_and_stops() -> None:
    """Two workers given one batch (a redelivery while the first still runs): the one
    that closes it wins; the other's next chunk is refused, so the figures stay those of
    the results stored."""
    runner, reads, batches, clock, ids = _setup(25)
    outcomes: list[RunOutcome] = []

    async def the_other_runs_it_to_the_end(_: str, done: int) -> None:
        if not outcomes:
            outcomes.append(await runner.run(TENANT, "b1"))

    observer = the_other_runs_it_to_the_end
    first = BatchRunner(reads, batches, DEFAULT_MODEL, chunk=10, clock=clock, observer=observer)
    assert await first.run(TENANT, "b1") is RunOutcome.ALREADY_FINAL
    assert outcomes == [RunOutcome.DONE]
    assert [len(r) for r in reads.reads] == [10, 10, 5, 10]  # the first's second: dropped
    assert [r["student_id"] for r in _results(batches, ids)] == ids
    record = batches.records[TENANT, "b1"]
    assert (record.status, record.succeeded, record.failed) == (BatchStatus.DONE, 25, 0)


async def test_a_run_yields_between_chunks_never_before_the_first_and_resumes() -> None:
    runner, reads, batches, _, ids = _setup(30)
    asked: list[int] = []

    async def higher_batch_waiting() -> bool:
        asked.append(len(reads.reads))
        return True

    assert await runner.run(TENANT, "b1", higher_batch_waiting) is RunOutcome.YIELDED
    assert asked == [2]  # asked once the second chunk was read, before scoring it
    assert sorted(batches.stored[TENANT, "b1"]) == sorted(ids[:10])
    assert batches.records[TENANT, "b1"].status is BatchStatus.RUNNING

    assert await runner.run(TENANT, "b1") is RunOutcome.DONE
    assert [r["student_id"] for r in _results(batches, ids)] == ids
    assert batches.records[TENANT, "b1"].succeeded == 30


async def test_a_student_erased_since_the_run_began_is_stored_as_not_found() -> None:
    runner, _, batches, _, ids = _setup(12)
    batches.erased_at[TENANT, "s3"] = NOW_MS  # erased as the run reads: refused
    batches.erased_at[TENANT, "s5"] = NOW_MS - 3_600_000  # long before: its state is gone
    assert await runner.run(TENANT, "b1") is RunOutcome.DONE
    results = _results(batches, ids)
    assert results[3]["error"] == "not_found"
    assert "result" in results[5]
    assert batches.records[TENANT, "b1"].failed == 1


async def test_the_figures_are_those_of_the_results_stored_when_the_run_ends() -> None:
    """A result replaced after the run stored it (an erasure's ``not_found``) is counted as
    what replaced it, not as what the run computed."""
    _, reads, batches, clock, _ = _setup(20)
    stand_in = orjson.dumps({"student_id": "s3", "error": "not_found"})

    async def erased_after_the_first_chunk(_: str, done: int) -> None:
        if done == 10:
            batches.stored[TENANT, "b1"]["s3"] = stand_in

    observer = erased_after_the_first_chunk
    runner = BatchRunner(reads, batches, DEFAULT_MODEL, chunk=10, clock=clock, observer=observer)
    assert await runner.run(TENANT, "b1") is RunOutcome.DONE
    record = batches.records[TENANT, "b1"]
    assert (record.succeeded, record.failed) == (19, 1)
    assert record.summary is not None
    assert record.summary["count"] == 19

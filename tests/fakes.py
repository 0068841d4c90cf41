"""In-memory fakes of the ports (``mastery.ports``), for unit tests of the use cases.

Each keeps what it was given in plain lists and dicts, so a test reads what happened
from it, and can be told to fail the way the real adapter fails (``Unavailable``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mastery.domain.batch import BatchStatus
from mastery.errors import Unavailable
from mastery.ports import Applied, BatchRecord, Outcome

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping, Sequence

    from mastery.domain import Observation, StudentState
    from mastery.offsets import OffsetBook
    from mastery.ports import Figures, Note, OutMessage, Unapplied


class FakeClock:
    """A ``Clock`` that stands still until a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


class FakePublisher:
    """A ``Publisher`` that keeps every message; ``down`` makes it refuse, as a broker away;
    ``paused``: each publish waits until it is set (a broker that does not answer)."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.sent: list[OutMessage] = []
        self.down = False
        self.paused: asyncio.Event | None = None
        self._log = log

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if not messages:
            return
        if self.paused is not None:
            await self.paused.wait()
        if self.down:
            raise Unavailable("kafka: down")
        if self._log is not None:
            self._log.append(f"publish {sorted({m.topic for m in messages})}")
        self.sent.extend(messages)


class FakeEventStore:
    """An ``EventStore``: every event applied once (by id), level changes kept in an outbox.

    ``changes`` are the notes the next ``apply`` reports (as the script would for the
    events that moved a level); a batch's tenant whose outbox holds older notes is in its
    ``backlog``.
    ``paused``: each ``apply`` waits until it is set (a slow Redis); ``poison``: event ids
    whose ``apply`` raises ``ValueError`` (a bug one event triggers); ``refuse``: event ids
    the store refuses (``REJECTED``) with the reason given, as ``apply.lua`` a full day.
    """

    def __init__(self, log: list[str] | None = None) -> None:
        self.applied: list[Observation] = []
        self.unapplied: list[Unapplied] = []
        self.outboxes: dict[str, dict[str, bytes]] = {}
        self.latency = 0.0
        self.changes: list[Note] = []
        self.down = False
        self.paused: asyncio.Event | None = None
        self.poison: set[str] = set()
        self.refuse: dict[str, str] = {}
        self._seen: set[str] = set()
        self._log = log

    async def apply(
        self,
        accepted: Sequence[tuple[Observation, bytes]],
        unapplied: Sequence[Unapplied],
        now: datetime,
        offsets: tuple[OffsetBook, Mapping[str, int]] | None = None,
        positions: Sequence[tuple[str, int]] | None = None,
    ) -> Applied:
        if self.paused is not None:
            await self.paused.wait()
        if self.down:
            raise Unavailable("redis: down")
        if poisoned := self.poison & {obs.event_id for obs, _ in accepted}:
            raise ValueError(f"poison {sorted(poisoned)}")
        if self._log is not None:
            self._log.append(f"apply {len(accepted)}+{len(unapplied)}")
        outcomes = []
        refused: dict[int, str] = {}
        for obs, _ in accepted:
            if obs.event_id in self.refuse:
                refused[len(outcomes)] = self.refuse[obs.event_id]
                outcomes.append(Outcome.REJECTED)
                continue
            if obs.event_id in self._seen:
                outcomes.append(Outcome.DUPLICATE)
                continue
            self._seen.add(obs.event_id)
            self.applied.append(obs)
            outcomes.append(Outcome.APPLIED)
        self.unapplied.extend(unapplied)
        notes, self.changes = self.changes, []
        backlog = frozenset(t for t in {obs.tenant for obs, _ in accepted} if self.outboxes.get(t))
        for tenant, entry, note in notes:
            self.outboxes.setdefault(tenant, {})[entry] = note
        return Applied(outcomes, notes, backlog, refused)

    async def leftovers(self, tenant: str, count: int = 100) -> list[tuple[str, bytes]]:
        """Every note held counts as a leftover here (no clock to age them by); each read
        takes ``latency`` seconds (a round trip)."""
        await asyncio.sleep(self.latency)
        return list(self.outboxes.get(tenant, {}).items())[:count]

    async def published(self, tenant: str, entry_ids: Sequence[str]) -> None:
        box = self.outboxes.get(tenant, {})
        for entry in entry_ids:
            box.pop(entry, None)


class FakeStudentReads:
    """``StudentReads`` over a dict of states; ``reads`` counts the chunks read."""

    def __init__(self, states: Mapping[tuple[str, str], StudentState] | None = None) -> None:
        self.states = dict(states or {})
        self.reads: list[Sequence[str]] = []

    async def load(self, tenant: str, student: str) -> StudentState | None:
        return self.states.get((tenant, student))

    async def load_many(self, tenant: str, students: Sequence[str]) -> list[StudentState | None]:
        self.reads.append(students)
        return [self.states.get((tenant, s)) for s in students]

    async def read_ahead(
        self, tenant: str, chunks: Sequence[Sequence[str]]
    ) -> AsyncGenerator[tuple[Sequence[str], list[StudentState | None]]]:
        for students in chunks:
            yield students, await self.load_many(tenant, students)


class FakeBatchRepository:
    """A ``BatchRepository`` in dicts: records, per-batch results, erasure times (ms)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], BatchRecord] = {}
        self.stored: dict[tuple[str, str], dict[str, bytes]] = {}
        self.erased_at: dict[tuple[str, str], int] = {}

    def add(self, record: BatchRecord) -> None:
        self.records[record.tenant, record.batch_id] = record

    async def get(self, tenant: str, batch_id: str) -> BatchRecord | None:
        return self.records.get((tenant, batch_id))

    async def start(self, tenant: str, batch_id: str, now_ms: int) -> BatchStatus | None:
        record = self.records.get((tenant, batch_id))
        if record is None:
            return None
        if record.status is BatchStatus.QUEUED:
            self._replace(record, status=BatchStatus.RUNNING, started_at=now_ms)
        return record.status

    async def finished_students(self, tenant: str, batch_id: str) -> set[str]:
        return set(self.stored.get((tenant, batch_id), {}))

    async def save_results(
        self,
        tenant: str,
        batch_id: str,
        results: Mapping[str, bytes],
        erased_since: int | None = None,
    ) -> list[str] | None:
        if self._final(tenant, batch_id):
            return None
        refused = [
            s
            for s in results
            if erased_since is not None and self.erased_at.get((tenant, s), -1) >= erased_since
        ]
        box = self.stored.setdefault((tenant, batch_id), {})
        box.update({s: r for s, r in results.items() if s not in refused})
        return refused

    async def results(self, tenant: str, batch_id: str, order: Sequence[str]) -> list[bytes]:
        box = self.stored.get((tenant, batch_id), {})
        return [box[s] for s in order if s in box]

    async def finish(
        self,
        tenant: str,
        batch_id: str,
        *,
        status: BatchStatus,
        finished_at: int,
        figures: Callable[[Mapping[str, bytes]], Figures],
        reason: str | None = None,
        unreached: Mapping[str, bytes] | None = None,
    ) -> bool:
        if (tenant, batch_id) not in self.records or self._final(tenant, batch_id):
            return False
        box = self.stored.setdefault((tenant, batch_id), {})
        box.update({s: r for s, r in (unreached or {}).items() if s not in box})
        succeeded, failed, summary = figures(box)
        self._replace(
            self.records[tenant, batch_id],
            status=status,
            finished_at=finished_at,
            succeeded=succeeded,
            failed=failed,
            summary=summary,
            reason=reason,
        )
        return True

    def _final(self, tenant: str, batch_id: str) -> bool:
        record = self.records.get((tenant, batch_id))
        return record is not None and record.status.final

    def _replace(self, record: BatchRecord, **changes: Any) -> None:
        self.records[record.tenant, record.batch_id] = replace(record, **changes)

"""The ports: what the use cases and workers need from the world, and the values that cross.

Each port is a small ``typing.Protocol``; the adapters (``mastery.store``,
``mastery.events.kafka``) satisfy them structurally, ``mastery.bootstrap`` builds them,
and the unit tests pass in-memory fakes (``tests/fakes.py``). This module imports only
the domain and the policy, so every floor above may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from mastery.domain.batch import BatchStatus, Priority
from mastery.policy import Role

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping, Sequence

    from mastery.domain import Observation, StudentState
    from mastery.offsets import OffsetBook

__all__ = [
    "Applied",
    "BatchRecord",
    "BatchRepository",
    "Clock",
    "EventStore",
    "Figures",
    "Note",
    "OffsetStore",
    "OutMessage",
    "Outcome",
    "Publisher",
    "Record",
    "StudentReads",
    "Unapplied",
    "utc_now",
]


# -- the clock --------------------------------------------------------------------------


class Clock(Protocol):
    """Business time: when an event is applied, a token expires, a batch's deadline passes."""

    def __call__(self) -> datetime: ...


def utc_now() -> datetime:
    """The system's clock (``Clock``), in UTC."""
    return datetime.now(UTC)


# -- records in, messages out ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record, however it reached us (consumer, KafkaSource, kafka-connector)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Mapping[str, bytes] = field(default_factory=dict)
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


class Publisher(Protocol):
    """Sends messages and returns once the broker has acknowledged every one."""

    async def publish(self, messages: Sequence[OutMessage]) -> None: ...


# -- applying events --------------------------------------------------------------------


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    ERASED = "erased"  # refused: the student was erased after the event happened
    REJECTED = "rejected"
    IGNORED = "ignored"  # valid, but feeds no component (an unmapped xAPI verb): not stored
    VOIDING = "voiding"  # an xAPI voiding statement: its target's effect removed (or barred)
    VOIDED = "voided"  # refused: an xAPI statement voided before it arrived (or again)


Unapplied = tuple[str | None, Outcome, str, bytes]
"""An event that will not be applied, audited all the same: (tenant if known, outcome
(``REJECTED``: it does not decode or validate; ``IGNORED``: valid, it feeds no
component), reason, audit record)."""

Note = tuple[str, str, bytes]
"""A level change: (tenant, its entry id in the tenant's outbox, JSON)."""

Figures = tuple[int, int, dict[str, object]]
"""What a final batch record keeps of its results: (succeeded, failed, summary)."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a batch did.

    ``notes``: each level change, also kept in its tenant's outbox until published.
    ``backlog``: tenants whose outbox holds older notes too (a publish was cut off).
    ``refused``: events the store would not apply although they decoded (their outcome
    is ``REJECTED``), by place in the batch, with the reason: dead-letter them.
    """

    outcomes: list[Outcome]
    notes: list[Note]
    backlog: frozenset[str]
    refused: dict[int, str] = field(default_factory=dict)


class EventStore(Protocol):
    """Where events are applied, audited, and their level changes kept until published."""

    async def apply(
        self,
        accepted: Sequence[tuple[Observation, bytes]],
        unapplied: Sequence[Unapplied],
        now: datetime,
        offsets: tuple[OffsetBook, Mapping[str, int]] | None = None,
        positions: Sequence[tuple[str, int]] | None = None,
    ) -> Applied: ...

    async def leftovers(self, tenant: str, count: int = 100) -> list[tuple[str, bytes]]: ...

    async def published(self, tenant: str, entry_ids: Sequence[str]) -> None: ...


class OffsetStore(Protocol):
    """The applied offsets a consumer keeps beside the events (``mastery.offsets``)."""

    async def read_offsets(self, group: str) -> dict[tuple[str, str], int]: ...

    async def advance_offsets(
        self, book: OffsetBook, moves: Mapping[str, Mapping[str, int]]
    ) -> None: ...


# -- reading students -------------------------------------------------------------------


class StudentReads(Protocol):
    """Students' scoring states (``None``: nothing held for that student)."""

    async def load(self, tenant: str, student: str) -> StudentState | None: ...

    async def load_many(
        self, tenant: str, students: Sequence[str]
    ) -> list[StudentState | None]: ...

    def read_ahead(
        self, tenant: str, chunks: Sequence[Sequence[str]]
    ) -> AsyncGenerator[tuple[Sequence[str], list[StudentState | None]]]:
        """Each chunk with its students' states, in turn; close it when stopping early."""
        ...


# -- batch runs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch run. Times are epoch milliseconds.

    ``role``, ``submitted_by`` and ``classes`` are the caller's at submission: the worker
    applies the policy with them, so a teacher's batch reads the classes of the token
    that submitted it.
    """

    batch_id: str
    tenant: str
    priority: Priority
    student_ids: tuple[str, ...]
    submitted_by: str
    role: Role
    classes: frozenset[str]
    submitted_at: int
    deadline_at: int
    status: BatchStatus = BatchStatus.QUEUED
    started_at: int | None = None
    finished_at: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    summary: dict[str, object] | None = None
    reason: str | None = None


class BatchRepository(Protocol):
    """Batch records and their per-student results, as a run reads and writes them."""

    async def get(self, tenant: str, batch_id: str) -> BatchRecord | None: ...

    async def start(self, tenant: str, batch_id: str, now_ms: int) -> BatchStatus | None:
        """Mark a queued batch running; the status it had (``None``: no such batch)."""
        ...

    async def finished_students(self, tenant: str, batch_id: str) -> set[str]: ...

    async def save_results(
        self,
        tenant: str,
        batch_id: str,
        results: Mapping[str, bytes],
        erased_since: int | None = None,
    ) -> list[str] | None:
        """Store results atomically; the students refused (erased at or after
        ``erased_since`` ms). ``None``: the batch is final, nothing was stored."""
        ...

    async def results(self, tenant: str, batch_id: str, order: Sequence[str]) -> list[bytes]: ...

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
        """Write the final status with the ``figures`` of the results stored (student ->
        JSON) when it is written: one an erasure replaced meanwhile is counted as replaced.
        ``unreached`` results are stored in the same step for those students that still
        have none. False: the batch was final already (or is gone), nothing written."""
        ...

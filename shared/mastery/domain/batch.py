"""Batch runs over many students: priorities, statuses and the summary of their scores."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from mastery.domain.model import Level
from mastery.domain.scoring import DEFAULT_MODEL

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mastery.domain.scoring import ScoringModel

__all__ = ["BatchStatus", "BatchSummary", "Priority", "StudentError", "summarize"]


class Priority(StrEnum):
    """Queues of batch runs, served strictly in this order (highest first)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class BatchStatus(StrEnum):
    QUEUED = "queued"  # accepted, waiting for a worker
    RUNNING = "running"  # a worker has started it; progress counts finished students
    DONE = "done"  # every student has a result or an error (timeouts included)
    FAILED = "failed"  # the deadline passed before any worker started it: all timed out

    @property
    def final(self) -> bool:
        return self in (BatchStatus.DONE, BatchStatus.FAILED)


class StudentError(StrEnum):
    """Why one student of a batch has no result; the batch itself goes on."""

    NOT_FOUND = "not_found"  # nothing held for the student in the caller's tenant
    FORBIDDEN = "forbidden"  # the caller may not read this student (mastery.policy)
    TIMEOUT = "timeout"  # the batch's deadline passed before the student was reached


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """Statistics over the students that have a score; ``None`` figures when none has."""

    count: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None
    levels: Mapping[Level, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "mean": self.mean,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "levels": {level.value: n for level, n in self.levels.items()},
        }


def summarize(masteries: Sequence[float], model: ScoringModel = DEFAULT_MODEL) -> BatchSummary:
    """Mean, median, extremes and the level distribution (every level, zeros included)."""
    counts = dict.fromkeys(Level, 0)
    for m in masteries:
        counts[model.level(m)] += 1
    levels = MappingProxyType(counts)
    if not masteries:
        return BatchSummary(0, None, None, None, None, levels)
    ordered = sorted(masteries)
    n, mid = len(ordered), len(ordered) // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return BatchSummary(
        count=n,
        mean=round(sum(ordered) / n, 4),
        median=round(median, 4),
        min=ordered[0],
        max=ordered[-1],
        levels=levels,
    )

"""The JSON documents the functions answer with, built from the pure domain's values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mastery.domain import MasteryReport, StudentState

__all__ = ["mastery_document"]


def mastery_document(
    student_id: str, tenant: str, state: StudentState, report: MasteryReport
) -> dict[str, object]:
    """The Contract's response body."""
    updated = state.updated_at
    return {
        "student_id": student_id,
        "tenant": tenant,
        "mastery": report.mastery,
        "level": report.level.value,
        "components": {
            c.value: {
                "score": part.score,
                "weight": part.weight,
                "contribution": part.contribution,
                "events": part.events,
                "observed": part.observed,
            }
            for c, part in report.components.items()
        },
        "next_level": (
            {"level": report.next_level.level.value, "gap": report.next_level.gap}
            if report.next_level
            else None
        ),
        "updated_at": datetime.fromtimestamp(updated, UTC).isoformat() if updated else None,
        "version": state.version,
    }

"""Pure scoring domain: no I/O, no clock reads, no Redis/Kafka/Avro imports."""

from mastery.domain.model import (
    Aggregate,
    Component,
    DaySnapshot,
    Level,
    Observation,
    StudentState,
)
from mastery.domain.scoring import (
    DEFAULT_MODEL,
    ComponentReport,
    Increment,
    MasteryReport,
    NextLevel,
    ScoringModel,
    explain,
    fold,
)

__all__ = [
    "DEFAULT_MODEL",
    "Aggregate",
    "Component",
    "ComponentReport",
    "DaySnapshot",
    "Increment",
    "Level",
    "MasteryReport",
    "NextLevel",
    "Observation",
    "ScoringModel",
    "StudentState",
    "explain",
    "fold",
]

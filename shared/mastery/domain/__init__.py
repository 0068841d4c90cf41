"""Pure scoring domain: no I/O, no clock reads, no Redis/Kafka/Avro imports."""

from mastery.domain.days import DayActivity, DayMean, day_activity, end_of_day
from mastery.domain.history import Bucket, Granularity, History, Summary, mastery_history
from mastery.domain.model import (
    Aggregate,
    Component,
    DaySnapshot,
    Level,
    Observation,
    StudentState,
)
from mastery.domain.prediction import DEFAULT_FORECAST, Forecast, Prediction, predict
from mastery.domain.recommendations import Priority, Recommendation, StudyAction, recommend
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
from mastery.domain.series import LineFit, Trend, day_mastery, fit_line

__all__ = [
    "DEFAULT_FORECAST",
    "DEFAULT_MODEL",
    "Aggregate",
    "Bucket",
    "Component",
    "ComponentReport",
    "DayActivity",
    "DayMean",
    "DaySnapshot",
    "Forecast",
    "Granularity",
    "History",
    "Increment",
    "Level",
    "LineFit",
    "MasteryReport",
    "NextLevel",
    "Observation",
    "Prediction",
    "Priority",
    "Recommendation",
    "ScoringModel",
    "StudentState",
    "StudyAction",
    "Summary",
    "Trend",
    "day_activity",
    "day_mastery",
    "end_of_day",
    "explain",
    "fit_line",
    "fold",
    "mastery_history",
    "predict",
    "recommend",
]

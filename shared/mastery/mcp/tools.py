"""The engine's operations as MCP tools: arguments, description, answer and summary.

Each tool runs the very use case of an HTTP function (``mastery_of``, ``prediction_of``,
``recommendations_of``, ``history_of``, ``comparison_of``, ``students_at_risk``) and
turns its document into a compact typed answer plus a one- or two-line summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from mastery.domain import DEFAULT_FORECAST, Granularity
from mastery.mcp.models import (
    ComparisonAnswer,
    HistoryAnswer,
    MasteryAnswer,
    PredictionAnswer,
    RecommendationsAnswer,
    RiskAnswer,
)
from mastery.policy import Action
from mastery.web.compare import comparison_of
from mastery.web.history import history_document, history_of
from mastery.web.prediction import prediction_of
from mastery.web.query import mastery_of
from mastery.web.recommendations import recommendations_of
from mastery.web.requests import CompareRequest, HistoryRequest, RiskRequest, StudentRequest
from mastery.web.risk import students_at_risk
from mastery.web.student import admit

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import date

    from mastery.web.app import Context
    from mastery.web.auth import Principal

__all__ = ["TOOLS", "HistoryArguments", "ToolSpec", "input_schema", "output_schema"]


class HistoryArguments(StudentRequest):
    days: int = Field(30, ge=7, le=90, description="how far back, 7-90 days")
    granularity: Granularity = Field(Granularity.DAY, description="one point per day/week/month")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool: its arguments, what it answers, and how."""

    name: str
    title: str
    description: str
    arguments: type[BaseModel]
    answer: type[BaseModel]
    run: Callable[[Context, Principal, Any], Awaitable[BaseModel]]
    summary: Callable[[Any], str]


async def _mastery(ctx: Context, p: Principal, args: StudentRequest) -> MasteryAnswer:
    admit(ctx, p, args, Action.READ)
    return MasteryAnswer.model_validate((await mastery_of(ctx, p, args)).model_dump())


def _mastery_summary(a: MasteryAnswer) -> str:
    head = f"{a.student_id}: mastery {a.mastery:.2f} ({a.level})"
    if a.next_level:
        head += f", {a.next_level.gap:.2f} below {a.next_level.level}"
    name, weakest = min(a.components.items(), key=lambda kv: kv[1].score)
    seen = "" if weakest.observed else ", no events yet"
    return f"{head}. Weakest component: {name} {weakest.score:.2f}{seen}."


async def _prediction(ctx: Context, p: Principal, args: StudentRequest) -> PredictionAnswer:
    admit(ctx, p, args, Action.READ)
    doc = await prediction_of(ctx, p, args)
    return PredictionAnswer.model_validate(
        {**doc.model_dump(by_alias=True), "days_with_data": doc.history.days_with_data}
    )


def _prediction_summary(a: PredictionAnswer) -> str:
    head = (
        f"{a.student_id}: {a.current_mastery:.2f} now, {a.predicted_mastery:.2f} "
        f"({a.predicted_level}) expected on {a.predicted_for}, {a.trend} "
        f"{a.slope_per_day:+.3f}/day, confidence {a.confidence:.2f}."
    )
    if a.intervention_needed:
        return f"{head}\nIntervention needed: {a.intervention_reason}."
    return f"{head} No intervention flagged."


async def _recommend(ctx: Context, p: Principal, args: StudentRequest) -> RecommendationsAnswer:
    admit(ctx, p, args, Action.READ)
    return RecommendationsAnswer.model_validate(
        (await recommendations_of(ctx, p, args)).model_dump()
    )


def _recommend_summary(a: RecommendationsAnswer) -> str:
    if not a.recommendations:
        return f"{a.student_id}: nothing below {a.target:.2f}, every component is on target."
    r = a.recommendations[0]
    where = f"{r.component}" + (f" in {r.area}" if r.area else "")
    return (
        f"{a.student_id}: {len(a.recommendations)} recommendation(s), mastery {a.mastery:.2f}. "
        f"First: {r.action} {where} ({r.priority}, about {r.estimated_minutes} min)."
    )


async def _history(ctx: Context, p: Principal, args: HistoryArguments) -> HistoryAnswer:
    admit(ctx, p, args, Action.READ)
    request = HistoryRequest(
        student_id=args.student_id, days=args.days, granularity=args.granularity
    )
    h, version = await history_of(ctx, p, request)
    doc = history_document(args.student_id, p.tenant, h, version)
    values: list[float | None] = [None] * (_period(h.end, h.start, h.granularity) + 1)
    for b in h.buckets:
        values[_period(b.start, h.start, h.granularity)] = round(b.mastery, 2)
    return HistoryAnswer.model_validate({**doc.model_dump(by_alias=True), "mastery": values})


def _period(day: date, start: date, granularity: Granularity) -> int:
    """Index of ``day``'s period, counting from the period holding ``start``."""
    if granularity is Granularity.DAY:
        return (day - start).days
    if granularity is Granularity.WEEK:
        monday = start - timedelta(days=start.weekday())
        return (day - monday).days // 7
    return (day.year - start.year) * 12 + day.month - start.month


def _history_summary(a: HistoryAnswer) -> str:
    if a.summary is None:
        return f"{a.student_id}: no data from {a.start} to {a.end}."
    s = a.summary
    return (
        f"{a.student_id}: {s.count} {a.granularity}(s) with data, {a.start} to {a.end}; "
        f"mastery {s.first:.2f} -> {s.last:.2f} ({s.change:+.2f}), {a.trend}."
    )


async def _compare(ctx: Context, p: Principal, args: CompareRequest) -> ComparisonAnswer:
    admit(ctx, p, args, Action.READ)
    return ComparisonAnswer.model_validate((await comparison_of(ctx, p, args)).model_dump())


def _compare_summary(a: ComparisonAnswer) -> str:
    where = f"class {a.class_id}" if a.class_id else "the school"
    own = a.student.get("mastery", 0.0)
    if a.cohort is None:
        return f"{a.student_id}: mastery {own:.2f}; {a.message or 'no cohort statistics'}."
    c = a.cohort["mastery"]
    return (
        f"{a.student_id}: mastery {own:.2f}, percentile {c.percentile:.0f} in {where} "
        f"({a.cohort_size} students; mean {c.mean:.2f}, median {c.median:.2f})."
    )


async def _at_risk(ctx: Context, p: Principal, args: RiskRequest) -> RiskAnswer:
    doc = await students_at_risk(ctx, p, args)
    students = [{**s, "reason": s["intervention_reason"]} for s in doc["students"]]
    return RiskAnswer.model_validate({**doc, "students": students})


def _at_risk_summary(a: RiskAnswer) -> str:
    where = f" in class {a.class_id}" if a.class_id else ""
    head = f"{a.flagged} of {a.checked} students{where} flagged for an intervention"
    if not a.students:
        return f"{head}."
    top = ", ".join(f"{s.student_id} ({s.predicted_mastery:.2f})" for s in a.students[:3])
    more = "" if a.complete else " Not every student was looked at (over 1000)."
    return f"{head}; highest risk: {top}.{more}"


_F = DEFAULT_FORECAST  # the flags and trend the description states are the model's own
_SCOPE = (
    " A student may ask about themselves only, a teacher about students of their classes, "
    "an admin about anyone in their school."
)
_SCALE = (
    "Scores are 0-1; mastery = 40% completion + 30% quiz + 20% quality + 10% consistency; "
    "levels: beginner < 0.40 <= developing < 0.60 <= competent < 0.75 <= proficient "
    "< 0.90 <= expert."
)

TOOLS: Mapping[str, ToolSpec] = {
    t.name: t
    for t in (
        ToolSpec(
            "get_mastery",
            "Current mastery",
            "A student's current mastery score and level, explained: each component's score, "
            "weight and contribution, and the gap to the next level. Use it to know where a "
            "student stands now, instead of reading their learning events. " + _SCALE + _SCOPE,
            StudentRequest,
            MasteryAnswer,
            _mastery,
            _mastery_summary,
        ),
        ToolSpec(
            "predict_next_week",
            "Mastery in 7 days",
            f"The student's expected mastery {_F.horizon_days} days from today: the "
            "recency-weighted mean with the events they will likely produce added (at their "
            "own rate, scoring where their recent raw scores stand and head): trend (where "
            "the forecast goes: improving/declining/stable beyond "
            f"+-{_F.stable_slope:g} a day), forecast change per day, confidence 0-1 (falls "
            "with the forecast's uncertainty) and whether an intervention is needed (at "
            f"confidence >= {_F.min_confidence:g}, when the forecast is below "
            f"{_F.flag_below:.2f} by {_F.below_margin:g} times its uncertainty, or the "
            f"expected fall is {_F.flag_drop:g} or more in the week by {_F.drop_margin:g} "
            "times its own; the reason names the signal). Use it before deciding to step "
            "in." + _SCOPE,
            StudentRequest,
            PredictionAnswer,
            _prediction,
            _prediction_summary,
        ),
        ToolSpec(
            "recommend",
            "What to study next",
            "What the student should work on first: up to 9 actions (practice, review, "
            "refactor, schedule) for the components and areas scoring below 0.70, highest "
            "impact on mastery first, each with a priority, a time estimate in minutes and a "
            "reason. Use it to plan the student's next exercises." + _SCOPE,
            StudentRequest,
            RecommendationsAnswer,
            _recommend,
            _recommend_summary,
        ),
        ToolSpec(
            "mastery_history",
            "Mastery over time",
            "The student's mastery over the last `days` days (7-90, default 30): one value per "
            "day, ISO week or month (granularity, default day), null for a period without "
            "data, with min/max/mean/first/last/change over the periods with data and the "
            "trend fitted over the daily values. Use "
            "it to see progress over time; use get_mastery for today's component detail." + _SCOPE,
            HistoryArguments,
            HistoryAnswer,
            _history,
            _history_summary,
        ),
        ToolSpec(
            "compare_to_cohort",
            "Compare with peers",
            "The student's mastery and component scores next to their school's or class's: "
            "mean, median and the student's percentile (share of the cohort below them) per "
            "metric. scope 'school' (default) or 'class' (class_id: one of the student's "
            "classes; default the first the caller may see; only with scope 'class'). "
            "Cohorts under 5 students give no statistics (privacy). Use it to judge a score "
            "relative to peers." + _SCOPE,
            CompareRequest,
            ComparisonAnswer,
            _compare,
            _compare_summary,
        ),
        ToolSpec(
            "find_students_at_risk",
            "Students needing help",
            "For teachers and admins: the students whose 7-day prediction flags an "
            "intervention (forecast mastery below 0.40, or an expected fall of 0.06 or more "
            "in the week, at confidence >= 0.2), highest risk (lowest predicted mastery) "
            "first, at most "
            "`limit` (1-100, default 10). class_id narrows to one class; without it a teacher "
            "gets all their classes, an admin the 1000 lowest-scoring students of the school. "
            "Use it to decide whom to help first; then call predict_next_week or recommend "
            "for one of them.",
            RiskRequest,
            RiskAnswer,
            _at_risk,
            _at_risk_summary,
        ),
    )
}


#: What model APIs (Anthropic, Bedrock, Vertex, OpenAI) refuse at the top of a tool's
#: input schema.
_TOP_LEVEL_COMBINATORS = ("anyOf", "oneOf", "allOf")


def input_schema(spec: ToolSpec) -> dict[str, Any]:
    """The tool's ``inputSchema``: its argument model's JSON schema, less any top-level
    ``anyOf``/``oneOf``/``allOf`` (a rule across arguments, for the OpenAPI document):
    those APIs refuse a tool whose schema has one. The tool's description states the
    rule instead, and the argument model still enforces it (a 422)."""
    schema = spec.arguments.model_json_schema()
    for key in _TOP_LEVEL_COMBINATORS:
        schema.pop(key, None)
    return schema


def output_schema(spec: ToolSpec) -> dict[str, Any]:
    """The tool's ``outputSchema``: its answer model's JSON schema."""
    return spec.answer.model_json_schema(by_alias=True)

"""Recommendations: the weak components and areas, highest impact first (pure, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mastery.domain import (
    DEFAULT_MODEL,
    Aggregate,
    Component,
    Priority,
    StudentState,
    StudyAction,
    recommend,
)
from mastery.domain.recommendations import (
    MAX_RECOMMENDATIONS,
    TARGET,
    estimated_minutes,
    priority_of,
)


def _agg(score: float, count: int = 3) -> Aggregate:
    return Aggregate(score * 2.0, 2.0, count)


_means = st.floats(0, 1, allow_nan=False)
_states = st.builds(
    lambda comps, areas: StudentState(
        components={c: _agg(m) for c, m in comps.items()},
        areas={(c, a): _agg(m) for (c, a), m in areas.items()},
    ),
    st.dictionaries(st.sampled_from(list(Component)), _means),
    st.dictionaries(
        st.tuples(st.sampled_from(list(Component)), st.sampled_from(["algebra", "loops", "io"])),
        _means,
        max_size=12,
    ),
)


@given(_states)
def test_at_most_nine_weak_items_highest_impact_first(state: StudentState) -> None:
    recs = recommend(state)
    assert len(recs) <= MAX_RECOMMENDATIONS
    impacts = [r.impact for r in recs]
    assert impacts == sorted(impacts, reverse=True)
    assert all(r.score < TARGET for r in recs)
    for r in recs:
        gap = TARGET - r.score
        assert r.impact == pytest.approx(DEFAULT_MODEL.weights[r.component] * gap, abs=2e-4)
        assert r.priority is priority_of(r.impact)
        assert r.estimated_minutes == estimated_minutes(round(gap, 4))
    # Whatever was left out weighs no more than the last item kept.
    weak = [m for c in Component if (m := state.component(c).mean) < TARGET]
    weak += [a.mean for a in state.areas.values() if a.mean < TARGET]
    assert len(recs) == min(len(weak), MAX_RECOMMENDATIONS)


def test_nothing_weak_gives_an_empty_list() -> None:
    state = StudentState(
        components={c: _agg(0.8) for c in Component}, areas={(Component.QUIZ, "x"): _agg(0.7)}
    )
    assert recommend(state) == []


def test_each_component_has_its_action_and_a_reason() -> None:
    state = StudentState(components={c: _agg(0.5) for c in Component})
    recs = {r.component: r for r in recommend(state)}
    assert {c: r.action for c, r in recs.items()} == {
        Component.COMPLETION: StudyAction.PRACTICE,
        Component.QUIZ: StudyAction.REVIEW,
        Component.QUALITY: StudyAction.REFACTOR,
        Component.CONSISTENCY: StudyAction.SCHEDULE,
    }
    quiz = recs[Component.QUIZ]
    assert (quiz.impact, quiz.priority, quiz.area) == (0.06, Priority.HIGH, None)
    assert quiz.reason == "quiz is at 0.50, 0.20 below 0.70: review the material and retake quizzes"
    assert recs[Component.CONSISTENCY].priority is Priority.LOW  # 0.1 * 0.2


def test_a_score_just_under_the_target_is_not_said_to_be_0_00_below() -> None:
    state = StudentState(components={c: _agg(0.6951) for c in Component})
    quiz = next(r for r in recommend(state) if r.component is Component.QUIZ)
    assert quiz.reason.startswith("quiz is at 0.6951, 0.0049 below 0.70: ")


def test_an_unobserved_component_is_advised_as_a_start() -> None:
    state = StudentState(components={Component.QUIZ: _agg(0.9)})
    recs = recommend(state)
    assert [r.component for r in recs] == [
        Component.COMPLETION,
        Component.QUALITY,
        Component.CONSISTENCY,
    ]
    first = recs[0]
    assert (first.observed, first.score, first.impact, first.priority) == (
        False,
        0.0,
        0.28,
        Priority.HIGH,
    )
    assert first.reason.startswith("no completion activity yet")


def test_areas_rank_with_their_component_weight() -> None:
    state = StudentState(
        components={c: _agg(0.75) for c in Component},
        areas={
            (Component.QUALITY, "code_quality"): _agg(0.4),
            (Component.COMPLETION, "advanced_topics"): _agg(0.6),
        },
    )
    recs = recommend(state)
    assert [(r.area, r.impact) for r in recs] == [("code_quality", 0.06), ("advanced_topics", 0.04)]
    assert recs[0].reason.startswith("quality in code_quality is at 0.40")


@pytest.mark.parametrize(
    ("impact", "priority"),
    [(0.28, "high"), (0.06, "high"), (0.0599, "medium"), (0.03, "medium"), (0.0299, "low")],
)
def test_priority_thresholds(impact: float, priority: str) -> None:
    assert priority_of(impact) == priority


def test_minutes_grow_with_the_gap_in_steps_of_five() -> None:
    gaps = [i / 1000 for i in range(1, 701)]
    minutes = [estimated_minutes(g) for g in gaps]
    assert minutes == sorted(minutes)
    assert all(m % 5 == 0 for m in minutes)
    assert (estimated_minutes(0.0001), estimated_minutes(0.05), estimated_minutes(0.7)) == (
        20,
        30,
        225,
    )

"""Day records: each event lands in its own day whatever the order (pure, no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mastery.domain import (
    Component,
    DayMean,
    Observation,
    StudentState,
    day_activity,
    end_of_day,
    explain,
    fold,
)
from mastery.domain.days import day_number, score_units

START = datetime(2026, 3, 1, tzinfo=UTC)

_event = st.builds(
    lambda i, c, score, minutes: Observation(
        f"e{i}", "school-a", "s1", c, score, START + timedelta(minutes=minutes)
    ),
    st.integers(0, 10**9),
    st.sampled_from(list(Component)),
    st.floats(0, 1, allow_nan=False),
    st.integers(0, 60 * 24 * 40),
)
_events = st.lists(_event, max_size=60, unique_by=lambda o: o.event_id)


@settings(max_examples=200, deadline=None)
@given(_events, st.randoms(use_true_random=False))
def test_any_permutation_gives_the_same_days_and_history(
    events: list[Observation], rnd: random.Random
) -> None:
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert day_activity(shuffled) == day_activity(events)
    assert end_of_day(day_activity(shuffled)) == end_of_day(day_activity(events))


@given(_events)
def test_each_event_lands_in_its_own_day(events: list[Observation]) -> None:
    records = day_activity(events)
    assert [r.day for r in records] == sorted({o.occurred_at.date() for o in events})
    for r in records:
        mine = [o for o in events if o.occurred_at.date() == r.day]
        for c, m in r.events.items():
            theirs = [o for o in mine if o.component is c]
            assert m == DayMean(len(theirs), sum(score_units(o.score) for o in theirs))


def test_a_newest_first_backfill_keeps_every_day() -> None:
    events = [
        Observation(f"e{d}", "school-a", "s1", Component.QUIZ, 0.5 + d / 40, START + timedelta(d))
        for d in range(14)
    ]
    assert len(day_activity(reversed(events))) == 14
    assert end_of_day(day_activity(reversed(events))) == end_of_day(day_activity(events))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.sampled_from(list(Component)), st.floats(0, 1))))
def test_the_end_of_each_day_is_the_state_folded_to_it(
    days: list[tuple[int, Component, float]],
) -> None:
    """Events at one time of day: the records fold to the very scores the state shows."""
    events = [
        Observation(f"e{i}", "school-a", "s1", c, v, START + timedelta(days=d, hours=12))
        for i, (d, c, v) in enumerate(days)
    ]
    for snapshot in end_of_day(day_activity(events)):
        upto = [o for o in events if o.occurred_at.date() <= snapshot.day]
        report = explain(fold(StudentState(), upto))
        for c, r in report.components.items():
            expected = r.score if r.observed else None
            assert snapshot.scores[c] == pytest.approx(expected, abs=1.01e-4)


def test_day_numbers_count_utc_days_from_the_decay_origin() -> None:
    assert day_number(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) == 0
    assert day_number(datetime(2024, 1, 1, 23, 59, tzinfo=UTC).timestamp()) == 0
    assert day_number(datetime(2024, 1, 2, tzinfo=UTC).timestamp()) == 1
    assert (score_units(0.0), score_units(0.12345), score_units(1.0)) == (0, 1235, 10000)

"""The pure side of batch runs: summary statistics, routes with parameters, messages."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mastery.batch.messages import batch_message, decode_batch
from mastery.domain import DEFAULT_MODEL, Level
from mastery.domain.batch import Priority, summarize
from mastery.errors import InvalidEvent
from mastery.ports import Record
from mastery.topics import priority_of
from mastery.web.routing import Routes


def test_summary_of_known_values() -> None:
    s = summarize([0.2, 0.5, 0.65, 0.95])
    assert (s.count, s.mean, s.median, s.min, s.max) == (4, 0.575, 0.575, 0.2, 0.95)
    assert s.levels == {
        Level.BEGINNER: 1,
        Level.DEVELOPING: 1,
        Level.COMPETENT: 1,
        Level.PROFICIENT: 0,
        Level.EXPERT: 1,
    }
    assert s.as_dict()["levels"] == {
        "beginner": 1,
        "developing": 1,
        "competent": 1,
        "proficient": 0,
        "expert": 1,
    }


def test_summary_of_nothing() -> None:
    s = summarize([])
    assert (s.count, s.mean, s.median, s.min, s.max) == (0, None, None, None, None)
    assert sum(s.levels.values()) == 0


@given(st.lists(st.floats(0, 1), min_size=1, max_size=200))
def test_summary_agrees_with_the_statistics_module(values: list[float]) -> None:
    s = summarize(values)
    assert s.mean == pytest.approx(round(statistics.fmean(values), 4), abs=1e-4)
    assert s.median == pytest.approx(round(statistics.median(values), 4), abs=1e-9)
    assert (s.min, s.max) == (min(values), max(values))
    assert sum(s.levels.values()) == len(values)
    assert all(
        n == sum(DEFAULT_MODEL.level(v) is lvl for v in values) for lvl, n in s.levels.items()
    )


def test_priorities_are_served_high_first() -> None:
    assert list(Priority) == [Priority.HIGH, Priority.NORMAL, Priority.LOW]
    assert priority_of("mastery.batch.low") is Priority.LOW


def test_routes_with_parameters() -> None:
    routes = Routes({"POST /batch/mastery": 1, "GET /batch/mastery/{batch_id}": 2})
    assert routes.match("POST", "/batch/mastery") == ("POST /batch/mastery", 1, {})
    assert routes.match("GET", "/batch/mastery/abc") == (
        "GET /batch/mastery/{batch_id}",
        2,
        {"batch_id": "abc"},
    )
    assert routes.match("GET", "/batch/mastery/a/b") is None
    assert routes.match("GET", "/batch/mastery/") is None
    assert routes.match("POST", "/batch/mastery/abc") is None
    assert routes.serves("/batch/mastery/abc") == ("/batch/mastery/{batch_id}", 2)
    assert routes.serves("/batch/mastery") == ("/batch/mastery", 1)
    assert routes.serves("/elsewhere") is None


def test_batch_messages_round_trip_and_refuse_what_names_no_batch() -> None:
    from datetime import UTC, datetime

    msg = batch_message(
        "mastery.batch", Priority.HIGH, "school-a", "a" * 32, datetime.now(UTC), "t"
    )
    assert msg.topic == "mastery.batch.high"
    record = Record(msg.topic, msg.value, msg.key, dict(msg.headers))
    assert decode_batch(record) == ("school-a", "a" * 32)
    for bad in (b"nope", b"[]", b'{"tenant": "x:y", "batch_id": "' + b"a" * 32 + b'"}',
                b'{"tenant": "x", "batch_id": "../etc"}'):  # fmt: skip
        with pytest.raises(InvalidEvent):
            decode_batch(Record(msg.topic, bad, None, {}))

"""``mastery replay --from-dlq``: dead letters go back to their topic once they would pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from mastery.cli import main
from mastery.cli.replay import plan, read_dlq, send
from mastery.domain import Component
from mastery.errors import Unavailable
from mastery.events.kafka import DLQ_HEADERS, dead_letter
from mastery.ports import Record
from mastery.topics import dlq_topic
from tests.helpers import event_data, fresh_topics, headers_of, produce, read_to_end, record

if TYPE_CHECKING:
    from mastery.settings import Settings


def _dead(settings: Settings, topic: str) -> tuple[Record, Record]:
    """Two dead letters: one refused for clock skew (fine by now), one that stays bad."""
    now = datetime.now(UTC)
    skewed = record(Component.QUIZ, event_data("t", "s1", at=now - timedelta(hours=1)), topic=topic)
    broken = record(
        Component.QUIZ,
        {**event_data("t", "s2"), "score": 7.0},
        topic=topic,
        content_type="application/json",
    )
    was_early = now - timedelta(hours=2)  # as seen by a consumer whose clock ran behind
    letters = [
        dead_letter(skewed, "occurred_at more than 5 minutes in the future", was_early, "test"),
        dead_letter(broken, "score: must be in [0, 1]", now, "test"),
    ]
    produce(settings, [Record(m.topic, m.value, m.key, dict(m.headers)) for m in letters])
    return skewed, broken


def _run(settings: Settings, *args: str) -> str:
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    result = CliRunner().invoke(main, ["replay", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_dry_run_sends_nothing_and_says_why(settings: Settings) -> None:
    [topic] = fresh_topics(settings, "mastery.quiz")
    _dead(settings, topic)
    out = _run(settings, "--from-dlq", dlq_topic(topic), "--dry-run")
    assert "1 of 2 records would be sent, 1 kept" in out
    assert "would be refused again" in out
    assert "score" in out
    assert read_to_end(settings, topic) == []


def test_replay_sends_the_original_records_back(settings: Settings) -> None:
    [topic] = fresh_topics(settings, "mastery.quiz")
    skewed, _ = _dead(settings, topic)
    assert "1 of 2 records sent, 1 kept" in _run(settings, "--from-dlq", dlq_topic(topic))
    [sent] = read_to_end(settings, topic)
    assert sent.value() == skewed.value
    assert sent.key() == skewed.key
    headers = headers_of(sent)
    assert headers["ce_id"] == skewed.headers["ce_id"].decode()  # a replay is a duplicate
    assert not set(headers) & set(DLQ_HEADERS)

    assert "2 of 2 records sent" in _run(settings, "--from-dlq", dlq_topic(topic), "--all")
    assert len(read_to_end(settings, topic)) == 3


def test_a_record_the_broker_did_not_take_is_not_reported_sent(settings: Settings) -> None:
    """A record that times out leaves the producer's queue (a flush then says all is
    sent): only its delivery report tells, and a replay must say it failed."""
    skewed = record(Component.QUIZ, event_data("t", "s1"))
    item = plan(skewed, datetime.now(UTC), settings.scoring_model())
    down = settings.model_copy(
        update={"kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000}
    )
    with pytest.raises(Unavailable):
        send(down, [item])


def test_only_dead_letter_topics_are_replayed(settings: Settings) -> None:
    result = CliRunner().invoke(
        main,
        ["replay", "--from-dlq", "mastery.quiz"],
        env={"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers},
    )
    assert result.exit_code == 1
    assert "not a dead-letter topic" in result.output


def test_a_replay_reads_every_dead_letter_of_a_partition(settings: Settings) -> None:
    """Read to the partition's end, not to the high watermark: Tansu reports the base
    offset of the last record batch + 1, and a batch's dead letters go out in one burst
    (one record batch), so reading to the watermark stopped after the first of them."""
    [topic] = fresh_topics(settings, "replayed")
    dlq = dlq_topic(topic)
    letters = [record(Component.QUIZ, event_data("t", "s1", 1.5), topic=dlq) for _ in range(20)]
    produce(settings, letters)  # one key: one partition
    assert len(list(read_dlq(settings, dlq, timeout_s=10))) == 20

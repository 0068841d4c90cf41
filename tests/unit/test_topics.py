"""``mastery.topics``: every topic the stack uses, its batch queues named by the settings."""

from __future__ import annotations

from mastery.settings import Settings
from mastery.topics import BATCH_PREFIX, all_topics, batch_topics, priority_of, topic_config

_DAY_MS = 86_400_000


def test_the_batch_queues_are_named_by_the_prefix_setting() -> None:
    prefix = Settings(MASTERY_BATCH_TOPIC_PREFIX="school-a.batch").batch_topic_prefix
    topics = all_topics(prefix)
    queues = ["school-a.batch.high", "school-a.batch.normal", "school-a.batch.low"]
    assert [t for t in topics if t.startswith(f"{prefix}.")] == [
        name for q in queues for name in (q, f"{q}.dlq")
    ]
    assert not [t for t in topics if t.startswith(f"{BATCH_PREFIX}.")]
    assert [priority_of(q) for q in batch_topics(prefix)] == [priority_of(q) for q in queues]


def test_renamed_queues_keep_their_retention() -> None:
    prefix = "school-a.batch"
    assert topic_config(f"{prefix}.low", prefix)["retention.ms"] == str(_DAY_MS)
    assert topic_config(f"{prefix}.low.dlq", prefix)["retention.ms"] == str(7 * _DAY_MS)
    assert topic_config(f"{BATCH_PREFIX}.low", prefix) == {}  # not a topic of this stack


def test_the_default_prefix_is_the_deployed_one() -> None:
    assert Settings.model_fields["batch_topic_prefix"].default == BATCH_PREFIX
    assert batch_topics(BATCH_PREFIX) == (
        "mastery.batch.high",
        "mastery.batch.normal",
        "mastery.batch.low",
    )


def test_every_topic_once() -> None:
    topics = all_topics(BATCH_PREFIX)
    assert len(topics) == len(set(topics))

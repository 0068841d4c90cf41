"""Every Kafka topic the engine uses, by name: the one place where a topic is spelled.

The names are fixed but for the batch queues, which ``MASTERY_BATCH_TOPIC_PREFIX``
(``Settings.batch_topic_prefix``) renames: whatever lists or creates the queues takes
the prefix from the settings, and ``BATCH_PREFIX`` (the default) names the deployed ones
(infra/topics, the AsyncAPI document, ``mastery.registry``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mastery.domain import Component
from mastery.domain.batch import Priority

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "AUDIT_TOPIC",
    "BATCH_PREFIX",
    "DLQ_SUFFIX",
    "EVENT_TOPICS",
    "LEVEL_CHANGED_TOPIC",
    "XAPI_TOPIC",
    "all_topics",
    "batch_topic",
    "batch_topics",
    "dlq_topic",
    "event_topic",
    "priority_of",
    "topic_config",
    "with_dead_letters",
]

#: xAPI statements forwarded by an LRS or a log shipper (``mastery.events.xapi``).
XAPI_TOPIC = "mastery.xapi"
#: Level changes out, as CloudEvents (``mastery.events.notifications``).
LEVEL_CHANGED_TOPIC = "mastery.level-changed"
#: The access audit, a record per request to a data function, two per erasure, one per
#: MCP tool call (``mastery.web.access``).
AUDIT_TOPIC = "mastery.audit"
#: The batch queues' default prefix: ``<prefix>.<priority>``.
BATCH_PREFIX = "mastery.batch"
DLQ_SUFFIX = ".dlq"


def event_topic(component: Component) -> str:
    """The Kafka topic that carries one component's learning events."""
    return f"mastery.{component}"


#: Learning events, one topic per component.
EVENT_TOPICS = tuple(event_topic(c) for c in Component)


def batch_topic(prefix: str, priority: Priority) -> str:
    return f"{prefix}.{priority.value}"


def batch_topics(prefix: str) -> tuple[str, ...]:
    """The batch queues, highest priority first."""
    return tuple(batch_topic(prefix, p) for p in Priority)


def priority_of(topic: str) -> Priority:
    """The priority a batch topic stands for (its last segment)."""
    return Priority(topic.rsplit(".", 1)[-1])


def dlq_topic(topic: str) -> str:
    """Where the records of ``topic`` that cannot be applied go."""
    return f"{topic}{DLQ_SUFFIX}"


def with_dead_letters(topics: Iterable[str]) -> list[str]:
    """``topics``, each followed by its dead-letter topic."""
    return [name for topic in topics for name in (topic, dlq_topic(topic))]


def all_topics(batch_prefix: str) -> list[str]:
    """Every topic the stack uses, its batch queues named by ``batch_prefix``."""
    return [
        *with_dead_letters([*EVENT_TOPICS, *batch_topics(batch_prefix), XAPI_TOPIC]),
        LEVEL_CHANGED_TOPIC,
        AUDIT_TOPIC,
    ]


_DAY_MS = 86_400_000


def _retention_days(topic: str, batch_prefix: str) -> int | None:
    """How long a topic keeps its records (docs/deploy.md, "Kafka retention", says why)."""
    batches = batch_topics(batch_prefix)
    events = (*EVENT_TOPICS, XAPI_TOPIC)
    days = {
        **dict.fromkeys(events, 100),  # > the 90-day window: `mastery rebuild` reads them
        # a dead letter can be replayed while its event is inside the window
        **dict.fromkeys(map(dlq_topic, events), 90),
        **dict.fromkeys(batches, 1),  # a batch's record in Redis lives 24 h: its message too
        **dict.fromkeys(map(dlq_topic, batches), 7),
        LEVEL_CHANGED_TOPIC: 7,
        AUDIT_TOPIC: 365,
    }
    return days.get(topic)


def topic_config(topic: str, batch_prefix: str) -> dict[str, str]:
    """Topic-level settings of one of ``all_topics(batch_prefix)`` ({} for any other).

    The same values as the KafkaTopic resources (infra/topics), which add replication
    and ``min.insync.replicas``: those belong to a real cluster, not the one-node dev one.
    """
    days = _retention_days(topic, batch_prefix)
    if days is None:
        return {}
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}

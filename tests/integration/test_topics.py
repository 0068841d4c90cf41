"""The stack's topics on a real broker: what ``create_topics`` makes."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from mastery.events.kafka import admin_config, create_topics

if TYPE_CHECKING:
    from mastery.settings import Settings


def test_create_topics_makes_the_batch_queues_the_prefix_names(settings: Settings) -> None:
    """MASTERY_BATCH_TOPIC_PREFIX renames the batch queues: the dev stack creates those."""
    prefix = f"pfx-{uuid.uuid4().hex[:8]}.batch"
    create_topics(settings.model_copy(update={"batch_topic_prefix": prefix}))
    existing = set(AdminClient(admin_config(settings)).list_topics(timeout=10).topics)
    queues = {f"{prefix}.high", f"{prefix}.normal", f"{prefix}.low"}
    assert queues | {f"{q}.dlq" for q in queues} <= existing

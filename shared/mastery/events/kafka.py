"""Kafka adapters: client configs, an awaitable publisher, record conversion, topic set-up."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from mastery.domain import Component
from mastery.errors import Unavailable
from mastery.events.codec import Record
from mastery.registry import BATCH_TOPICS, event_topic

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from confluent_kafka import Message

    from mastery.settings import Settings

__all__ = [
    "DLQ_HEADERS",
    "KafkaPublisher",
    "OutMessage",
    "Publisher",
    "all_topics",
    "consumer_config",
    "create_topics",
    "dead_letter",
    "dlq_topic",
    "producer_config",
    "reader_config",
    "to_record",
    "topic_config",
]

#: librdkafka's defaults make a consumer-group join take ~23 s on Tansu; these make it ~3 s.
_GROUP_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


class Publisher(Protocol):
    """Sends messages and returns once the broker has acknowledged every one."""

    async def publish(self, messages: Sequence[OutMessage]) -> None: ...


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


#: Headers ``dead_letter`` adds to the original record's.
DLQ_HEADERS = ("dlq_reason", "dlq_topic", "dlq_partition", "dlq_offset", "dlq_at", "dlq_source")


def dead_letter(record: Record, reason: str, now: datetime, source: str) -> OutMessage:
    """The DLQ copy of a record: its value, key and headers, plus why and where from."""
    values = (
        reason,
        record.topic,
        str(record.partition),
        str(record.offset),
        now.isoformat(),
        source,
    )
    headers = [
        *record.headers.items(),
        *zip(DLQ_HEADERS, (v.encode() for v in values), strict=True),
    ]
    return OutMessage(dlq_topic(record.topic), record.value, record.key, headers)


def all_topics() -> list[str]:
    """Every topic the stack uses (DESIGN.md "Events")."""
    events = [event_topic(c) for c in Component]
    return [
        *events,
        *(dlq_topic(t) for t in events),
        *BATCH_TOPICS,
        *(dlq_topic(t) for t in BATCH_TOPICS),
        "mastery.level-changed",
        "mastery.audit",
    ]


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": False,  # Tansu does not implement idempotent producers
        "acks": "all",
        "linger.ms": 0,  # the access audit waits for its acknowledgement: send at once
        "message.timeout.ms": settings.kafka_timeout_ms,
    }


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group,
        "enable.auto.commit": False,  # offsets are committed only after Redis applied them
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
        **_GROUP_TIMINGS,
    }


def reader_config(settings: Settings) -> dict[str, Any]:
    """A consumer that is only ever assigned partitions: it joins no group, commits nothing."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": "mastery-reader",  # librdkafka wants one; never joined, nothing committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,  # how a read knows it has reached the end
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
    }


def to_record(message: Message) -> Record:
    raw = message.headers() or []
    headers = list(raw.items()) if isinstance(raw, dict) else raw
    value, key = message.value(), message.key()
    return Record(
        topic=message.topic() or "",
        value=value.encode() if isinstance(value, str) else value,
        key=key.encode() if isinstance(key, str) else key,
        headers={k: v if isinstance(v, bytes) else (v or "").encode() for k, v in headers},
        partition=_or(message.partition(), -1),
        offset=_or(message.offset(), -1),
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


class KafkaPublisher:
    """``Publisher`` over confluent-kafka: produce, then await every delivery report.

    The producer is made on first use (functions that never publish open no connection),
    with a thread that serves delivery reports as they come, so a publish waits for its
    own acknowledgements and nobody else's.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._made: Producer | None = None
        self._closing = threading.Event()

    @property
    def _producer(self) -> Producer:
        if self._made is None:
            self._made = Producer(self._config)
            threading.Thread(target=self._serve_reports, name="kafka-reports", daemon=True).start()
        return self._made

    def _serve_reports(self) -> None:
        producer = self._made
        while producer is not None and not self._closing.is_set():
            producer.poll(0.05)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if not messages:
            return
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in messages]

        def reporter(fut: asyncio.Future[None]) -> Any:
            def report(err: Any, _msg: Any) -> None:
                outcome = Unavailable(f"kafka: {err}") if err else None
                loop.call_soon_threadsafe(_settle, fut, outcome)

            return report

        try:
            for msg, fut in zip(messages, futures, strict=True):
                self._producer.produce(
                    msg.topic,
                    msg.value,
                    msg.key,
                    headers=list(msg.headers),
                    on_delivery=reporter(fut),
                )
        except (KafkaException, BufferError) as exc:
            raise Unavailable(f"kafka: {exc}") from exc
        # Every message is reported within message.timeout.ms (10 s); the deadline only
        # guards against a report that never comes.
        try:
            async with asyncio.timeout(15):
                await asyncio.gather(*futures)
        except TimeoutError as exc:
            raise Unavailable("kafka: delivery not confirmed") from exc

    async def check(self, wait_s: float = 2.0) -> None:
        """Raise ``Unavailable`` unless the broker answers a metadata request."""
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=wait_s)
        except KafkaException as exc:
            raise Unavailable(f"kafka: {exc}") from exc

    def close(self) -> None:
        self._closing.set()
        if self._made is not None:
            self._made.flush(5)


def _settle(fut: asyncio.Future[None], error: Exception | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


_DAY_MS = 86_400_000


def _retention_days(topic: str) -> int | None:
    """How long a topic keeps its records (docs/deploy.md, "Kafka retention", says why)."""
    events = {event_topic(c) for c in Component}
    if topic in events:
        return 100  # > the 90-day window: `mastery rebuild` can restore Redis from them
    if topic in {dlq_topic(t) for t in events}:
        return 90  # a dead letter can be replayed while its event is inside the window
    if topic in BATCH_TOPICS:
        return 1  # a batch's record in Redis lives 24 h; its message is useless after
    if topic in {dlq_topic(t) for t in BATCH_TOPICS}:
        return 7
    return {"mastery.level-changed": 7, "mastery.audit": 365}.get(topic)


def topic_config(topic: str) -> dict[str, str]:
    """Topic-level settings of one of ``all_topics()`` ({} for any other topic).

    The same values as the KafkaTopic resources (infra/topics), which add replication
    and ``min.insync.replicas``: those belong to a real cluster, not the one-node dev one.
    """
    days = _retention_days(topic)
    if days is None:
        return {}
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}


def create_topics(settings: Settings, topics: Sequence[str] | None = None) -> None:
    """Create the stack's topics if missing (idempotent), with their retention."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    wanted = list(topics or all_topics())
    existing = admin.list_topics(timeout=10).topics
    missing = [
        NewTopic(
            t,
            num_partitions=settings.topic_partitions,
            replication_factor=1,
            config=topic_config(t),
        )
        for t in wanted
        if t not in existing
    ]
    if not missing:
        return
    for topic, future in admin.create_topics(missing).items():
        try:
            future.result(timeout=10)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise Unavailable(f"kafka: cannot create {topic}: {exc}") from exc

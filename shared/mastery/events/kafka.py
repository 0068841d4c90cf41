"""Kafka adapters: client configs, an awaitable publisher, record conversion, topic set-up."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from mastery import tracing
from mastery.errors import Misconfigured, Unavailable
from mastery.metrics import dlq_reason
from mastery.ports import OutMessage, Record
from mastery.topics import all_topics, dlq_topic, topic_config

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from confluent_kafka import Message

    from mastery.settings import Settings

__all__ = [
    "DLQ_HEADERS",
    "KafkaPublisher",
    "admin_config",
    "consumer_config",
    "create_topics",
    "dead_letter",
    "dead_line",
    "kafka_common",
    "probe",
    "producer_config",
    "reader_config",
    "to_record",
    "wait_for_broker",
]

#: librdkafka's defaults make a consumer-group join take ~23 s on Tansu; these make it ~3 s.
#: Production brokers keep librdkafka's defaults (45 s sessions ride out a GC pause).
_EMBEDDED_GROUP_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
#: Tansu answers an empty fetch only when this runs out: short, or a trickle waits 500 ms.
_EMBEDDED_FETCH = {"fetch.wait.max.ms": 10}


#: Headers ``dead_letter`` adds to the original record's.
DLQ_HEADERS = ("dlq_reason", "dlq_topic", "dlq_partition", "dlq_offset", "dlq_at", "dlq_source")


#: Characters of a reason or an unverified id a log line keeps.
_MAX_LOGGED = 300


def dead_line(
    record: Record, reason: str, tenant: str | None = None, event_id: str | None = None
) -> dict[str, object]:
    """What the log says of a dead letter: where it came from and why, never its payload
    (personal data); ``event_id``, when not given, the record's ``ce_id``."""
    if event_id is None and (ce_id := record.headers.get("ce_id")):
        event_id = ce_id.decode(errors="replace")
    return {
        "event_id": event_id[:_MAX_LOGGED] if event_id is not None else None,
        "tenant": tenant,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "reason_class": dlq_reason(reason),
        "reason": reason[:_MAX_LOGGED],
    }


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


class _OncePerMinute(logging.Filter):
    """Lets each distinct librdkafka line through at most once a minute.

    A broker that refuses our password is retried every few milliseconds, and librdkafka
    logs every retry: without this a misconfigured function writes 20 lines a second.
    """

    _TIMING = re.compile(r"\(after \d+ms[^)]*\)")

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = self._TIMING.sub("", record.getMessage())
        now = time.monotonic()
        if now - self._seen.get(key, -60.0) < 60.0:
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = now
        return True


def _librdkafka_logger() -> logging.Logger:
    log = logging.getLogger("mastery.librdkafka")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("librdkafka %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.addFilter(_OncePerMinute())
        log.setLevel(logging.DEBUG)  # librdkafka's log_level decides what is sent
        log.propagate = False
    return log


def kafka_common(settings: Settings) -> dict[str, Any]:
    """What every client (producer, consumer, admin) shares: brokers, security, pass-through.

    ``MASTERY_KAFKA_PROPERTIES`` is not applied here but last by each builder, so an
    operator can override anything, including the builders' own choices.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
        "logger": _librdkafka_logger(),  # served by each client's poll, deduplicated
    }
    if settings.kafka_sasl_mechanism is not None:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
    credentials = settings.kafka_sasl_credentials()
    if credentials is not None:
        conf["sasl.username"], conf["sasl.password"] = credentials
    files = {
        "ssl.ca.location": settings.kafka_ssl_ca_location,
        "ssl.certificate.location": settings.kafka_ssl_certificate_location,
        "ssl.key.location": settings.kafka_ssl_key_location,
    }
    conf |= {name: str(path) for name, path in files.items() if path is not None}
    if settings.kafka_ssl_key_password is not None:
        conf["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    return conf


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **kafka_common(settings),
        # Retries after a lost acknowledgement must not write an event twice; Tansu has
        # no idempotent producer, so only the embedded broker goes without.
        "enable.idempotence": not settings.kafka_embedded,
        "acks": "all",
        "linger.ms": 0,  # the access audit waits for its acknowledgement: send at once
        "message.timeout.ms": settings.kafka_timeout_ms,
        **settings.kafka_properties,
    }


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    return {
        **kafka_common(settings),
        "group.id": group,
        "enable.auto.commit": False,  # offsets are committed only after Redis applied them
        "auto.offset.reset": "earliest",
        **(_EMBEDDED_FETCH | _EMBEDDED_GROUP_TIMINGS if settings.kafka_embedded else {}),
        **settings.kafka_properties,
    }


def reader_config(settings: Settings) -> dict[str, Any]:
    """A consumer that is only ever assigned partitions: it joins no group, commits nothing."""
    return {
        **kafka_common(settings),
        "group.id": "mastery-reader",  # librdkafka wants one; never joined, nothing committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,  # how a read knows it has reached the end
        "auto.offset.reset": "earliest",
        **(_EMBEDDED_FETCH if settings.kafka_embedded else {}),
        **settings.kafka_properties,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    return {**kafka_common(settings), **settings.kafka_properties}


#: Errors that retrying cannot cure: the broker refused our credentials or certificate.
_REFUSALS = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


def probe(settings: Settings, timeout_s: float = 10.0) -> None:
    """Ask the broker for its metadata with ``settings``' credentials (a start-up check).

    Raises:
        Misconfigured: the configuration is refused (bad property, wrong password,
            untrusted certificate); the message is librdkafka's own, on one line.
        Unavailable: no broker answered within ``timeout_s``.
    """
    wait_for_broker(admin_config(settings), timeout_s)


def wait_for_broker(config: dict[str, Any], timeout_s: float) -> None:
    """Ask for the broker's metadata with the client ``config`` until it answers.

    Raises ``Misconfigured`` at once when the broker refuses the configuration, and
    ``Unavailable`` when none answered within ``timeout_s`` (as ``probe``).
    """
    errors: list[KafkaError] = []
    # log_level 0: the reason is raised once here, not logged at every reconnect.
    conf = config | {"error_cb": errors.append, "log_level": 0}
    try:
        admin = AdminClient(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        raise Misconfigured(f"kafka: {_one_line(exc)}") from exc
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: it says why, list_topics only "timed out"
            refused = next((e for e in errors if e.code() in _REFUSALS), None)
            if refused is not None:
                raise Misconfigured(f"kafka: {_one_line(refused.str())}") from exc
            if time.monotonic() >= deadline:
                reason = errors[-1].str() if errors else exc
                raise Unavailable(f"kafka: {_one_line(reason)}") from exc


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split())


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
        self._config = {**config, "error_cb": self._on_error}
        self._made: Producer | None = None
        self._closing = threading.Event()
        self._last_error: str | None = None
        """librdkafka's latest connection error: /ready says why, not only "timed out"."""

    def _on_error(self, error: KafkaError) -> None:
        self._last_error = _one_line(error.str())

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
        """Send ``messages``; each carries the current trace context when tracing is on."""
        if not messages:
            return
        if not tracing.enabled():
            return await self._publish(messages)
        topics = sorted({m.topic for m in messages})
        with tracing.span(
            f"{','.join(topics)} publish",
            kind=tracing.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": ",".join(topics),
                "messaging.batch.message_count": len(messages),
            },
        ):
            traced = [
                OutMessage(m.topic, m.value, m.key, tracing.inject_headers(m.headers))
                for m in messages
            ]
            await self._publish(traced)

    async def _publish(self, messages: Sequence[OutMessage]) -> None:
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
            if self._last_error is None:
                raise Unavailable(f"kafka: {exc}") from exc
            # librdkafka's own reason says it all; the exception only says "transport failure"
            raise Unavailable(f"kafka: {self._last_error}") from None
        self._last_error = None

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


def create_topics(settings: Settings, topics: Sequence[str] | None = None) -> None:
    """Create ``topics`` (default: every topic of the stack) if missing, with their retention.

    Idempotent. The batch queues are named by ``settings.batch_topic_prefix``.
    """
    prefix = settings.batch_topic_prefix
    admin = AdminClient(admin_config(settings))
    wanted = list(topics or all_topics(prefix))
    existing = admin.list_topics(timeout=10).topics
    missing = [
        NewTopic(
            t,
            num_partitions=settings.topic_partitions,
            replication_factor=1,
            config=topic_config(t, prefix),
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

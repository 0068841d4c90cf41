"""A local stand-in for Knative's KafkaSource: Kafka records to HTTP CloudEvents.

Each record is POSTed to the sink as a binary-mode CloudEvent (``ce-*`` headers), with
retries and exponential back-off; a record the sink still refuses is dead-lettered, as
KafkaSource's ``deadLetterSink`` would. Offsets are committed after every record of the
batch was delivered or dead-lettered.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
from confluent_kafka.aio import AIOConsumer
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from mastery.events.consumer import commit_offsets, next_batch, next_offsets, subscribe
from mastery.events.kafka import consumer_config, dead_letter, to_record
from mastery.logs import logger

if TYPE_CHECKING:
    from pathlib import Path

    from mastery.bootstrap import Resources
    from mastery.ports import Record

__all__ = ["http_headers", "run_trigger"]

_IN_FLIGHT = 16


class _Refused(Exception):
    """The sink answered non-2xx: retry."""


def http_headers(record: Record) -> dict[str, str]:
    """The HTTP headers of a record delivered as a binary-mode CloudEvent."""
    headers = {"content-type": "application/json"}
    for name, value in record.headers.items():
        text = value.decode(errors="replace")
        if name.startswith("ce_"):
            headers[f"ce-{name[3:]}"] = text
        elif name.lower() == "content-type":
            headers["content-type"] = text
    return headers


async def run_trigger(
    res: Resources,
    topic: str,
    sink: str,
    stop: asyncio.Event,
    ready_file: Path | None = None,
    retries: int = 5,
) -> None:
    log = logger(f"trigger-{topic}")
    consumer = AIOConsumer(consumer_config(res.settings, f"mastery-trigger-{topic}"), max_workers=2)
    await subscribe(consumer, [topic], ready_file)
    gate = asyncio.Semaphore(_IN_FLIGHT)
    async with httpx.AsyncClient(timeout=10) as client:

        async def deliver(record: Record) -> None:
            async with gate:
                try:
                    async for attempt in AsyncRetrying(
                        retry=retry_if_exception_type((_Refused, httpx.TransportError)),
                        wait=wait_exponential(multiplier=0.2, max=5),
                        stop=stop_after_attempt(retries + 1),
                    ):
                        with attempt:
                            resp = await client.post(
                                sink, content=record.value or b"", headers=http_headers(record)
                            )
                            if not resp.is_success:
                                raise _Refused(f"{resp.status_code} {resp.text[:200]}")
                except RetryError as exc:
                    reason = f"delivery failed: {exc.last_attempt.exception()}"
                    log.warning("dead-lettering", extra={"offset": record.offset, "reason": reason})
                    now = datetime.now(UTC)
                    await res.publisher.publish(
                        [dead_letter(record, reason, now, f"trigger:{sink}")]
                    )

        try:
            while not stop.is_set():
                messages = await next_batch(consumer, res.settings.batch_size)
                batch = [m for m in messages if m.error() is None]
                if not batch:
                    continue
                await asyncio.gather(*(deliver(to_record(m)) for m in batch))
                await commit_offsets(consumer, next_offsets(batch), wait=True)
        finally:
            await consumer.close()

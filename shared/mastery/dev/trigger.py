"""A local stand-in for Knative's KafkaSource: Kafka records to HTTP CloudEvents.

Each record is POSTed to the sink as a binary-mode CloudEvent (``ce-*`` headers), up to
``in_flight`` at a time over as many keep-alive connections (aiohttp: its client costs
about a twentieth of httpx's per request here, which made the trigger, not the handler,
the bottleneck of ``make run``). A delivery that fails (a non-2xx answer, no connection,
no answer in time) is retried with exponential back-off; a record the sink still refuses
is dead-lettered, as KafkaSource's ``deadLetterSink`` would. Offsets are committed after
every record of the batch was delivered or dead-lettered.

aiohttp is the ``local`` extra's, as the whole local stack is.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import aiohttp
from confluent_kafka.aio import AIOConsumer
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from mastery.errors import why
from mastery.events.consumer import commit_offsets, next_batch, next_offsets, subscribe
from mastery.events.kafka import consumer_config, dead_letter, to_record
from mastery.logs import logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

    from confluent_kafka import Message

    from mastery.bootstrap import Resources
    from mastery.ports import Record

__all__ = ["Sink", "http_headers", "run_trigger"]

T = TypeVar("T")

#: Deliveries in flight. The handler applies what arrives while a group is in Redis as
#: the next group (``GroupCommit``), so more in flight means bigger groups: 64 drained
#: 10-25 % more events/s than 32 on the handler bench, 128 no more than 64.
IN_FLIGHT = 64
#: Back-off before the first retry; it doubles before each next one, up to ``_MAX_WAIT_S``.
_FIRST_WAIT_S = 0.2
_MAX_WAIT_S = 5.0
_TIMEOUT_S = 10.0
_STRUCTURED = "application/cloudevents"
_EXTENSION = re.compile("[^a-z0-9]")


class _Refused(Exception):
    """The sink answered non-2xx: retry."""


#: What a retry may cure: a refusal, a connection lost or refused, no answer in time.
_RETRIED = (_Refused, aiohttp.ClientError, TimeoutError)


def http_headers(record: Record) -> dict[str, str]:
    """The HTTP headers KafkaSource's dispatcher sends for ``record``.

    A CloudEvent, binary mode (``ce_specversion``) or structured: as it is, ``ce_x``
    headers as ``ce-x``. A plain record (an xAPI statement): a CloudEvent made up for it,
    each record header an extension named lower-case ``[a-z0-9]`` only
    (``mastery_tenant`` -> ``ce-masterytenant``), as the dispatcher does (docs/decisions.md).
    """
    content_type = next(
        (
            v.decode(errors="replace")
            for k, v in record.headers.items()
            if k.lower() == "content-type"
        ),
        "",
    )
    if "ce_specversion" in record.headers or content_type.startswith(_STRUCTURED):
        headers = {"content-type": content_type or "application/json"}
        for name, value in record.headers.items():
            if name.startswith("ce_"):
                headers[f"ce-{name[3:]}"] = value.decode(errors="replace")
        return headers
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"partition:{record.partition}/offset:{record.offset}",
        "ce-type": "dev.knative.kafka.event",
        "ce-source": f"/mastery/trigger#{record.topic}",
        "content-type": "application/octet-stream",
    }
    for name, value in record.headers.items():
        headers[f"ce-{_EXTENSION.sub('', name.lower())}"] = value.decode(errors="replace")
    return headers


class Sink:
    """Delivers records to an event handler's URL, retrying what a retry may cure."""

    def __init__(self, http: aiohttp.ClientSession, url: str, retries: int) -> None:
        self._http = http
        self._url = url
        self._retries = retries

    async def deliver(self, record: Record) -> str | None:
        """``None`` once the sink accepted ``record``; why not, after every retry failed.

        The first attempt goes without the retry machinery (most deliveries need
        nothing more); after a failure, ``retries`` more with back-off: 0.2 s, 0.4 s, ...
        """
        try:
            await self._post(record)
            return None
        except _RETRIED:
            pass
        if self._retries < 1:
            return "delivery failed: no retries left"
        await asyncio.sleep(_FIRST_WAIT_S)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_RETRIED),
                wait=wait_exponential(multiplier=2 * _FIRST_WAIT_S, max=_MAX_WAIT_S),
                stop=stop_after_attempt(self._retries),
            ):
                with attempt:
                    await self._post(record)
        except RetryError as exc:
            error = exc.last_attempt.exception() or exc
            return f"delivery failed: {why(error) or type(error).__name__}"
        return None

    async def _post(self, record: Record) -> None:
        """One attempt; ``_Refused`` unless the answer is 2xx. The answer is read whole,
        so its connection goes back to the pool."""
        async with self._http.post(
            self._url, data=record.value or b"", headers=http_headers(record)
        ) as answer:
            body = await answer.read()
        if not 200 <= answer.status < 300:
            raise _Refused(f"{answer.status} {body[:200].decode(errors='replace')}")


async def run_trigger(
    res: Resources,
    topic: str,
    sink: str,
    stop: asyncio.Event,
    ready_file: Path | None = None,
    retries: int = 5,
    in_flight: int = IN_FLIGHT,
) -> None:
    log = logger(f"trigger-{topic}")
    consumer = AIOConsumer(consumer_config(res.settings, f"mastery-trigger-{topic}"), max_workers=2)
    await subscribe(consumer, [topic], ready_file)
    connector = aiohttp.TCPConnector(limit=in_flight)
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        target = Sink(http, sink, retries)

        async def deliver(message: Message) -> None:
            record = to_record(message)
            reason = await target.deliver(record)
            if reason is not None:
                log.warning("dead-lettering", extra={"offset": record.offset, "reason": reason})
                now = datetime.now(UTC)
                await res.publisher.publish([dead_letter(record, reason, now, f"trigger:{sink}")])

        try:
            while not stop.is_set():
                messages = await next_batch(consumer, res.settings.batch_size)
                batch = [m for m in messages if m.error() is None]
                if not batch:
                    continue
                await _each(batch, deliver, in_flight)
                await commit_offsets(consumer, next_offsets(batch), wait=True)
        finally:
            await consumer.close()


async def _each(items: Sequence[T], run: Callable[[T], Awaitable[None]], workers: int) -> None:
    """``run`` every item, ``workers`` at a time: that many tasks, not one per item."""
    pending = iter(items)

    async def work() -> None:
        for item in pending:
            await run(item)

    await asyncio.gather(*(work() for _ in range(min(workers, len(items)))))

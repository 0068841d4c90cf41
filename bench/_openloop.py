"""An open-loop HTTP/1.1 load generator on raw asyncio streams.

Request ``i`` is due at ``start + i / rate`` whatever happened to the earlier ones, and
its latency runs from that due time to the last byte of the answer. Time spent late to
send (the generator's own jitter) or waiting for a free connection therefore counts, as
it would for a real client: no coordinated omission. The generator's lateness is
reported too, so a slow generator is visible rather than blamed on the server.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["OpenLoopResult", "http_request", "open_loop"]


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    latencies: list[float]  # seconds, ascending, measured requests only
    send_lag: list[float]  # seconds past the due time at which each was written, ascending
    errors: int  # non-200 answers and failed connections among the measured requests
    achieved_rate: float  # measured requests sent per second


def http_request(
    method: str, host: str, path: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration: float,
    warmup: float = 1.0,
    connections: int = 64,
) -> OpenLoopResult:
    """Send ``requests`` round-robin at ``rate`` per second for ``warmup + duration`` s.

    Requests due in the first ``warmup`` seconds are sent but not measured. Keep-alive
    connections are opened up front; with all of them busy a request waits for one.
    """
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    loop = asyncio.get_running_loop()
    total = int((warmup + duration) * rate)
    skip = int(warmup * rate)
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0

    async def one(i: int, due: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        try:
            sent = loop.time()
            writer.write(requests[i % len(requests)])
            status = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
        done = loop.time()
        pool.put_nowait((reader, writer))
        if i >= skip:
            latencies.append(done - due)
            lags.append(sent - due)
            errors += status != 200

    tasks: set[asyncio.Task[None]] = set()
    gc.disable()  # a generator pause would be charged to the server
    try:
        start = loop.time() + 0.05
        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_all = loop.time()
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
        while not pool.empty():
            _, writer = pool.get_nowait()
            writer.close()
    measured = total - skip
    return OpenLoopResult(
        sorted(latencies),
        sorted(lags),
        errors,
        measured / max(1e-9, sent_all - (start + skip / rate)),
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length framed, as uvicorn sends it); returns the status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    length = -1
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length < 0:
        raise ValueError("response without Content-Length")
    await reader.readexactly(length)
    return int(status_line.split(b" ", 2)[1])

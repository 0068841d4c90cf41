"""A plain confluent-kafka consumer that timestamps each record: the latency baseline.

Run as ``python -m bench._kafka_probe`` by ``bench.latency``. Every record carries the
``bench_due`` header (the CLOCK_MONOTONIC time its send was due, 8-byte double), which
is comparable across processes on one machine. Same client configuration as
``mastery consume``, but ``poll()`` per record and nothing else: no decode, no Redis.
Writes ``[seq, latency_s]`` pairs as JSON to ``--out`` once ``--expected`` records
arrived, or when it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import struct
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from mastery.events.kafka import consumer_config
from mastery.settings import Settings

DUE = struct.Struct("<d")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("topics", nargs="+")
    args = parser.parse_args()

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    settings = Settings(kafka_bootstrap_servers=args.servers, kafka_embedded=True)
    consumer = Consumer(consumer_config(settings, args.group))

    def on_assign(_: object, partitions: list[TopicPartition]) -> None:
        if partitions:
            args.ready.touch()

    consumer.subscribe(args.topics, on_assign=on_assign)
    seen: list[tuple[int, float]] = []
    try:
        while not stopping and len(seen) < args.expected:
            message = consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            now = time.monotonic()
            headers = dict(message.headers() or [])
            due, seq = headers.get("bench_due"), headers.get("bench_seq")
            if isinstance(due, bytes) and isinstance(seq, bytes):
                seen.append((int(seq), now - DUE.unpack(due)[0]))
    finally:
        consumer.close()
        args.out.write_bytes(orjson.dumps(seen))


if __name__ == "__main__":
    main()

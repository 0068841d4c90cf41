"""(j) The per-event function path and ``make run``'s local trigger.

1. ``on-quiz`` (an event-handler function) answering one binary-mode CloudEvent per HTTP
   request, as KafkaSource delivers them (``ce-*`` headers, Avro body), under wrk, next
   to the hello-world function in the same run: the query bench's method and CPU
   placement (functions on the server CPU, wrk and redis-server on the other).
2. ``mastery trigger`` (the KafkaSource stand-in of ``make run``) draining a backlog of
   the topic into ``on-quiz``, timed end to end, next to the handler's own rate of (1).
   The trigger takes wrk's place on the load CPU, so the handler sits where it sat.

Every request carries a new CloudEvent id (``events.lua``) and every backlog event its
own, so each event takes the apply path, never the duplicate one; the counts are checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench._events import audited, backlog, produce_all, sum_versions, wait_until_audited
from bench._harness import (
    BIN,
    ROOT,
    Row,
    cpu_marks,
    cpu_seconds,
    group_cpu_seconds,
    median,
    other_cpu,
    pinned,
    progress,
    spread,
)
from bench.query import (
    HELLO,
    WRK_CONNECTIONS,
    WRK_ROUNDS,
    WRK_THREADS,
    WrkLoad,
    _ensure_wrk,
    _serve,
    _wrk,
)
from mastery.dev.trigger import IN_FLIGHT, http_headers
from mastery.domain import Component
from mastery.topics import event_topic

if TYPE_CHECKING:
    from pathlib import Path
    from subprocess import Popen

    from bench._events import KafkaEvent
    from bench._harness import Stack

__all__ = ["run"]

ON_QUIZ = ROOT / "functions" / "on_quiz" / "main.py"
STUDENTS = 20_000
TENANTS = 10  # the drain's events per tenant audit stream stay below its 100k MAXLEN
WRK_EVENTS = 20_000  # distinct bodies (students, scores) wrk cycles through
#: What wrk sends: the body (hex) and headers of one event per line, ids added per request.
EVENT_LOAD = WrkLoad("/", ROOT / "bench" / "events.lua", "events.tsv")
DRAIN_EVENTS = 15_000
DRAIN_ROUNDS = 2  # each on a fresh broker and Redis: the trigger's group is per topic
DRAIN_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class _Cpu:
    """CPU seconds a set of processes used over ``events`` events and ``wall`` seconds, and
    the share of all CPUs that other processes took meanwhile (``others``)."""

    seconds: dict[str, float]
    events: int
    wall: float
    others: float = 0.0

    def __add__(self, other: _Cpu) -> _Cpu:
        names = self.seconds.keys() | other.seconds.keys()
        seconds = {n: self.seconds.get(n, 0.0) + other.seconds.get(n, 0.0) for n in names}
        wall = self.wall + other.wall
        others = (self.others * self.wall + other.others * other.wall) / wall
        return _Cpu(seconds, self.events + other.events, wall, others)

    def text(self) -> str:
        """Busiest first: share of one core and microseconds per event; then the others'."""
        busiest = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        mine = ", ".join(
            f"{name} {s / self.wall:.0%} ({s / self.events * 1e6:,.0f} us)" for name, s in busiest
        )
        return f"{mine}; other processes {self.others:.0%} of all CPUs"


async def run(stack: Stack) -> list[Row]:
    wrk = _ensure_wrk()
    if not wrk:
        return [Row("handler", "on-quiz under wrk", "skipped: wrk unavailable")]
    split = pinned()
    gen_cpus, server_cpus = split if split else (None, None)
    client = await stack.fresh_stores()
    await client.aclose()
    with stack.redis_on(gen_cpus):
        hello, handler, under_wrk = await _closed_loop(stack, wrk, gen_cpus, server_cpus)
        drains = [await _drain(stack, r, gen_cpus, server_cpus) for r in range(DRAIN_ROUNDS)]
    ratio = median(handler) / median(hello)
    rates = [d.events / d.wall for d in drains]
    typical = sorted(drains, key=lambda d: d.events / d.wall)[len(drains) // 2]
    versus = median(rates) / median(handler)
    return [
        Row(
            "handler",
            "on-quiz, one CloudEvent (Avro, binary mode) per request as KafkaSource delivers, "
            f"events/s, median of {WRK_ROUNDS} (wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS})",
            spread(handler),
            f"{spread(hello)} (hello-world)",
            f"{ratio:.2f}x",
            ">= 0.4x hello-world",
            ratio >= 0.4,
        ),
        Row("handler", "  CPU under wrk: share of a core (per event)", under_wrk.text()),
        Row(
            "handler",
            f"`make run`'s trigger (`mastery trigger`, {IN_FLIGHT} in flight) -> on-quiz, "
            f"{DRAIN_EVENTS // 1000}k events from Kafka, events/s end to end, "
            f"median of {DRAIN_ROUNDS}",
            spread(rates),
            f"{median(handler):,.0f} (on-quiz under wrk -c{WRK_CONNECTIONS}, above)",
            f"{versus:.2f}x",
            ">= 1.0x the handler's own rate",
            versus >= 1.0,
        ),
        Row(
            "handler",
            "  CPU while draining (median run): share of a core (per event)",
            typical.text(),
        ),
    ]


async def _closed_loop(
    stack: Stack, wrk: str, gen_cpus: set[int] | None, server_cpus: set[int] | None
) -> tuple[list[float], list[float], _Cpu]:
    """req/s of hello-world and events/s of on-quiz, alternating rounds; on-quiz's CPU."""
    events = backlog(WRK_EVENTS, [Component.QUIZ], students=STUDENTS, tenants=TENANTS, prefix="w")
    (stack.workdir / EVENT_LOAD.data).write_text("".join(_wrk_line(e) for e in events))
    servers: list[Popen[bytes]] = []
    try:
        hello_port = await _serve(stack, servers, "hello", HELLO, server_cpus)
        port = await _serve(stack, servers, "on-quiz", ON_QUIZ, server_cpus)
        await _check_answer(port, events[0])
        progress(f"handler: wrk, {WRK_ROUNDS} rounds, hello-world then on-quiz")
        hello: list[float] = []
        handler: list[float] = []
        measured = {"on-quiz": servers[1]}
        answered = 1  # _check_answer's
        cpu = _Cpu({}, 0, 0.0)
        for r in range(WRK_ROUNDS):
            hello.append(
                (await _wrk(stack, wrk, f"hello-{r}", hello_port, gen_cpus, EVENT_LOAD)).rps
            )
            mark = _mark(stack, measured)
            result = await _wrk(stack, wrk, f"on-quiz-{r}", port, gen_cpus, EVENT_LOAD)
            cpu += _since(mark, stack, measured, result.requests)
            handler.append(result.rps)
            answered += result.requests
        await _check_applied(port, answered, WRK_ROUNDS * 2 * WRK_CONNECTIONS)
    finally:
        for proc in servers:
            stack.stop(proc)
    return hello, handler, cpu


async def _drain(
    stack: Stack, r: int, gen_cpus: set[int] | None, server_cpus: set[int] | None
) -> _Cpu:
    """``mastery trigger`` delivering a backlog of ``DRAIN_EVENTS`` to a fresh on-quiz."""
    client = await stack.fresh_stores()
    topic = event_topic(Component.QUIZ)
    progress(f"handler: round {r + 1}/{DRAIN_ROUNDS}: producing {DRAIN_EVENTS:,} events to {topic}")
    events = backlog(
        DRAIN_EVENTS, [Component.QUIZ], students=STUDENTS, tenants=TENANTS, prefix=f"d{r}"
    )
    await asyncio.to_thread(produce_all, stack.settings(), events)
    servers: list[Popen[bytes]] = []
    try:
        port = await _serve(stack, servers, "on-quiz", ON_QUIZ, server_cpus)
        ready = stack.workdir / f"trigger-{r}.ready"
        argv: list[str | Path] = [BIN / "mastery", "trigger", "--topic", topic]
        argv += ["--sink", f"http://127.0.0.1:{port}/", "--ready-file", ready]
        trigger = stack.spawn("trigger", argv, env=stack.env(), cpus=gen_cpus)
        servers.append(trigger)
        await asyncio.to_thread(stack.wait_for_file, ready, trigger)
        progress(f"handler: round {r + 1}/{DRAIN_ROUNDS}: the trigger drains them")
        measured = {"trigger": trigger, "on-quiz": servers[0]}
        mark = _mark(stack, measured)
        await wait_until_audited(
            client,
            DRAIN_EVENTS,
            TENANTS,
            DRAIN_TIMEOUT,
            lambda: stack.exited(trigger) or stack.exited(servers[0]),
        )
        cpu = _since(mark, stack, measured, DRAIN_EVENTS)
        applied = await sum_versions(client, STUDENTS, TENANTS)
        if applied != DRAIN_EVENTS or await audited(client, TENANTS) != DRAIN_EVENTS:
            raise RuntimeError(f"the trigger got {applied} of {DRAIN_EVENTS} events applied")
    finally:
        for proc in servers:
            stack.stop(proc)
        await client.aclose()
    return cpu


_Mark = tuple[tuple[float, float, float, float], dict[str, float]]


def _mark(stack: Stack, procs: dict[str, Popen[bytes]]) -> _Mark:
    """The machine's marks (``cpu_marks``), and the CPU seconds of ``procs`` (their process
    groups) and the stack's servers."""
    seconds = {name: group_cpu_seconds(p.pid) for name, p in procs.items()}
    servers = {name: cpu_seconds(pid) for name, pid in stack.server_pids().items()}
    return cpu_marks(stack), seconds | servers


def _since(mark: _Mark, stack: Stack, procs: dict[str, Popen[bytes]], events: int) -> _Cpu:
    (before, start), (after, end) = mark, _mark(stack, procs)
    seconds = {name: end[name] - s for name, s in start.items()}
    return _Cpu(seconds, events, after[0] - before[0], other_cpu(before, after)[0])


def _wrk_line(event: KafkaEvent) -> str:
    """``events.lua``'s line: the body in hex, then the headers the trigger would send."""
    headers = http_headers(event.record())
    del headers["ce-id"]
    return "\t".join([event.value.hex(), *(f"{k}: {v}" for k, v in headers.items())]) + "\n"


async def _check_answer(port: int, event: KafkaEvent) -> None:
    """The benchmark is void if the function answers anything but "applied": check one."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/", content=event.value, headers=http_headers(event.record())
        )
    if response.status_code != 200 or response.json().get("outcome") != "applied":
        raise RuntimeError(f"on-quiz answered {response.status_code}: {response.text}")


async def _check_applied(port: int, answered: int, in_flight: int) -> None:
    """Every answered event was applied (none a duplicate, none dead-lettered), by on-quiz's
    own ``mastery_events_total``; requests cut off when a wrk run ended may be applied too."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    outcomes = {
        sample.labels["outcome"]: int(sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == "mastery_events"
        for sample in family.samples
        if sample.name == "mastery_events_total"
    }
    applied = outcomes.pop("applied", 0)
    if not answered <= applied <= answered + in_flight or any(outcomes.values()):
        raise RuntimeError(
            f"{answered} events answered, on-quiz counted {applied} applied, {outcomes}"
        )

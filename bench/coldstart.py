"""(h) Cold start: process start -> first 200 on a real request, per function, next to hello.

Every function is started as in production (``functions-framework --asgi``) with Redis
and a broker up, and sent one real request as soon as its port takes connections (a
real token, a seeded student, a real CloudEvent); the clock runs from just before the
process is spawned to the answer's last byte. Fresh processes in rounds, each round
every function once (hello-world first), median per function.

The breakdown comes from a fresh interpreter per function (``bench/_coldprobe.py``, no
server): the import of its ``main.py``, then the first and second call of its handler,
and one ``python -X importtime`` run of the same, the import time summed by package.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import jwt
import orjson

from bench._events import learning_event
from bench._harness import BIN, JWT_SECRET, ROOT, Row, median, pinned, progress
from bench.query import (
    HELLO,
    HISTORY,
    PREDICTION,
    QUERY,
    TENANT,
    _headers,
    _seed,
    _spawn_function,
    _token,
)
from mastery.dev.servers import free_port
from mastery.domain import Component
from mastery.store import RedisStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from bench._harness import Stack

__all__ = ["run"]

ROUNDS = 5  # fresh processes per function
PROBES = 3  # fresh interpreters per function for the import / first-call breakdown
STUDENTS = 1000
BATCH_SIZE = 100
PROBE = ROOT / "bench" / "_coldprobe.py"
STARTUP_TIMEOUT = 60


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    source: Path
    what: str  # the request, for the table
    request: Callable[[int], _Request]  # a different student / event for each n
    check: Callable[[httpx.Response], bool] = lambda _: True
    env: dict[str, str] = field(default_factory=dict)


def _post(path: str, body: object, token: str) -> _Request:
    return _Request("POST", path, _headers(token), orjson.dumps(body))


def _student(n: int) -> str:
    return f"s{n % STUDENTS}"


def _admin() -> str:
    claims = {"sub": "a1", "role": "admin", "tenant": TENANT, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _quiz_event(n: int) -> _Request:
    """A quiz answer as KafkaSource delivers it: binary-mode CloudEvent, Avro data."""
    event = learning_event(
        Component.QUIZ,
        event_id=f"cold-{time.time_ns()}-{n}",
        tenant=TENANT,
        student=_student(n),
        score=0.8,
        occurred_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    headers = {
        (f"ce-{k[3:]}" if k.startswith("ce_") else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in event.headers
        if v is not None
    }
    return _Request("POST", "/", headers, event.value)


FUNCTIONS = ROOT / "functions"
TARGETS = [
    _Function(
        "hello",
        HELLO,
        "the query's request",
        lambda n: _post("/mastery/query", {"student_id": _student(n)}, _token(_student(n))),
    ),
    _Function(
        "mastery-query",
        QUERY,
        "POST /mastery/query",
        lambda n: _post("/mastery/query", {"student_id": _student(n)}, _token(_student(n))),
        lambda r: "mastery" in r.json(),
    ),
    _Function(
        "prediction",
        PREDICTION,
        "POST /predictions/next-week, not cached",
        lambda n: _post("/predictions/next-week", {"student_id": _student(n)}, _token(_student(n))),
        lambda r: r.json().get("cached") is False,
    ),
    _Function(
        "mastery-history",
        HISTORY,
        "POST /analytics/mastery-history, 30 days by day",
        lambda n: _post(
            "/analytics/mastery-history",
            {"student_id": _student(n), "days": 30, "granularity": "day"},
            _token(_student(n)),
        ),
        lambda r: "series" in r.json(),
    ),
    _Function(
        "on-quiz",
        FUNCTIONS / "on_quiz" / "main.py",
        "a quiz CloudEvent (binary mode, Avro), applied",
        _quiz_event,
        lambda r: r.json() == {"outcome": "applied"},
    ),
    _Function(
        "batch-mastery",
        FUNCTIONS / "batch_mastery" / "main.py",
        f"POST /batch/mastery, {BATCH_SIZE} students sync",
        lambda n: _post(
            "/batch/mastery",
            {"student_ids": [_student(n * BATCH_SIZE + i) for i in range(BATCH_SIZE)]},
            _admin(),
        ),
        lambda r: len(r.json().get("results", [])) == BATCH_SIZE,
    ),
]


async def run(stack: Stack) -> list[Row]:
    split = pinned()
    server_cpus = split[1] if split else None
    client = await stack.fresh_stores()  # the audit records of the first requests go there
    progress(f"coldstart: seeding {STUDENTS} students")
    await _seed(RedisStore(client), [_student(n) for n in range(STUDENTS)])
    await client.aclose()

    # The image's `pip install .` compiles the package's bytecode at build time; here
    # shared/ is installed editable and PYTHONDONTWRITEBYTECODE may be set, so without
    # this step every process would compile the engine from source (~100 ms more).
    await _compile_bytecode(stack)
    # The probes come first: they also page-cache what every process loads, so no
    # function's first cold start pays for that alone.
    progress(f"coldstart: import / first call in {PROBES} fresh interpreters per function")
    probes: dict[str, list[dict[str, float]]] = defaultdict(list)
    packages: dict[str, dict[str, float]] = {}
    for i in range(PROBES):
        for f in TARGETS:
            probes[f.name].append(await _probe(stack, f, i, server_cpus))
    for f in TARGETS:
        runs = [await _importtime(stack, f, i, server_cpus) for i in range(PROBES)]
        names = {p for r in runs for p in r}
        packages[f.name] = {p: median([r.get(p, 0.0) for r in runs]) for p in names}

    progress(f"coldstart: {ROUNDS} rounds of a fresh process per function")
    cold: dict[str, list[float]] = defaultdict(list)
    listening: dict[str, list[float]] = defaultdict(list)
    async with httpx.AsyncClient(timeout=STARTUP_TIMEOUT) as http:
        for r in range(ROUNDS):
            for k, f in enumerate(TARGETS):
                n = 100 + r * len(TARGETS) + k  # a student no earlier request touched
                up, took = await _cold(stack, http, f, f.request(n), server_cpus)
                listening[f.name].append(up)
                cold[f.name].append(took)
    return _rows(cold, listening, probes, packages)


async def _compile_bytecode(stack: Stack) -> None:
    """``__pycache__`` for the engine and the functions (git-ignored), as the image has."""
    sources = [ROOT / "shared" / "mastery", FUNCTIONS, HELLO.parent]
    proc = stack.spawn("compileall", [BIN / "python", "-m", "compileall", "-q", *sources])
    if await asyncio.to_thread(proc.wait):
        raise RuntimeError(f"compileall failed:\n{stack.log_tail('compileall')}")


def _rows(
    cold: dict[str, list[float]],
    listening: dict[str, list[float]],
    probes: dict[str, list[dict[str, float]]],
    packages: dict[str, dict[str, float]],
) -> list[Row]:
    def ms(values: list[float]) -> str:
        return f"{median(values) * 1e3:,.0f} ({min(values) * 1e3:,.0f}-{max(values) * 1e3:,.0f})"

    def phases(name: str) -> tuple[float, float, float]:
        return tuple(  # type: ignore[return-value]
            median([p[k] for p in probes[name]]) * 1e3 for k in ("import", "first", "second")
        )

    hello = median(cold["hello"])
    h_up = median(listening["hello"]) * 1e3
    h_imp, h_first, h_second = phases("hello")
    h_total = sum(packages["hello"].values())
    rows = []
    for f in TARGETS[1:]:
        mine = median(cold[f.name])
        up = median(listening[f.name]) * 1e3
        ratio = mine / hello
        imp, first, second = phases(f.name)
        top = sorted(packages[f.name].items(), key=lambda kv: -kv[1])[:5]
        total = sum(packages[f.name].values())
        rows += [
            Row(
                "coldstart",
                f"{f.name}: process start -> first 200 ({f.what}), ms, median of {ROUNDS}; "
                "port listening (main.py imported) at",
                f"{ms(cold[f.name])}; listening at {up:,.0f}",
                f"{ms(cold['hello'])}; listening at {h_up:,.0f} (hello-world)",
                f"{ratio:.2f}x",
                "<= 1.3x hello-world",
                ratio <= 1.3,
            ),
            Row(
                "coldstart",
                f"  {f.name}, fresh interpreter, no server (median of {PROBES}): "
                "import main.py / first call / second call",
                f"{imp:,.0f} / {first:,.1f} / {second:,.1f} ms",
                f"{h_imp:,.0f} / {h_first:,.1f} / {h_second:,.1f} ms (hello-world)",
                f"import {imp - h_imp:+,.0f} ms, first call {first - h_first:+,.1f} ms",
            ),
            Row(
                "coldstart",
                f"  {f.name}, -X importtime (incl. imports during the first call), "
                "top packages, self ms",
                f"{total:,.0f} ms: " + ", ".join(f"{p} {t:,.0f}" for p, t in top),
                f"{h_total:,.0f} ms (hello-world)",
                f"{total - h_total:+,.0f} ms",
            ),
        ]
    return rows


async def _cold(
    stack: Stack, http: httpx.AsyncClient, f: _Function, req: _Request, cpus: set[int] | None
) -> tuple[float, float]:
    """Seconds from spawning ``f`` to its port taking connections, and to its first answer.

    functions-framework imports ``main.py`` before gunicorn binds the port; the worker
    is forked after. A connection opened (and closed) meanwhile waits in the backlog.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}{req.path}"
    started = time.monotonic()
    proc = _spawn_function(stack, f.name, f.source, port, cpus, **f.env)
    try:
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                listening = time.monotonic() - started
                writer.close()
                break
            except OSError as e:  # not listening yet
                if proc.poll() is not None or time.monotonic() - started > STARTUP_TIMEOUT:
                    raise RuntimeError(f"{f.name} never listened:\n{stack.log_tail(f.name)}") from e
                await asyncio.sleep(0.002)
        answer = await http.request(req.method, url, content=req.body, headers=req.headers)
        took = time.monotonic() - started
    finally:
        stack.stop(proc, timeout=2)
    if answer.status_code != 200 or not f.check(answer):
        raise RuntimeError(f"{f.name} answered {answer.status_code}: {answer.text[:300]}")
    return listening, took


def _probe_argv(stack: Stack, f: _Function, i: int, *flags: str) -> list[str | Path]:
    requests = stack.workdir / f"probe-{f.name}-{i}.json"
    requests.write_text(
        orjson.dumps(
            [
                {
                    "method": r.method,
                    "path": r.path,
                    "headers": r.headers,
                    "body": r.body.decode("latin-1"),
                }
                for r in (f.request(10 + 2 * i), f.request(11 + 2 * i))
            ]
        ).decode()
    )
    return [BIN / "python", *flags, PROBE, f.source, requests]


async def _probe(stack: Stack, f: _Function, i: int, cpus: set[int] | None) -> dict[str, float]:
    name = f"probe-{f.name}-{i}"
    proc = stack.spawn(name, _probe_argv(stack, f, i), env=stack.env(), cpus=cpus)
    await asyncio.to_thread(proc.wait)
    last = stack.log_tail(name, 1)
    try:
        result = orjson.loads(last)
    except orjson.JSONDecodeError:
        raise RuntimeError(f"{name} failed:\n{stack.log_tail(name)}") from None
    if result["status"] != [200, 200]:
        raise RuntimeError(f"{name} answered {result['status']}:\n{stack.log_tail(name)}")
    return {k: float(result[k]) for k in ("import", "first", "second")}


async def _importtime(
    stack: Stack, f: _Function, i: int, cpus: set[int] | None
) -> dict[str, float]:
    """Milliseconds of import (self time) by package, one ``-X importtime`` run.

    The engine's own modules are grouped by subpackage (``mastery.events``), the rest by
    top-level package.
    """
    name = f"importtime-{f.name}-{i}"
    argv = _probe_argv(stack, f, PROBES + i, "-X", "importtime")
    proc = stack.spawn(name, argv, env=stack.env(), cpus=cpus)
    await asyncio.to_thread(proc.wait)
    by_package: dict[str, float] = defaultdict(float)
    for line in (stack.workdir / f"{name}.log").read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, _, module = line[len("import time:") :].split("|")
        if own.strip().isdigit():
            parts = module.strip().split(".")
            package = ".".join(parts[:2]) if parts[0] == "mastery" else parts[0]
            by_package[package] += int(own) / 1e3
    if not by_package:
        raise RuntimeError(f"{name} printed no import times:\n{stack.log_tail(name)}")
    return dict(by_package)

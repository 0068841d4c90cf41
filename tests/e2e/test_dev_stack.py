"""``mastery dev`` as a user runs it: events on Kafka show up in the score over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import jwt
import pytest
from confluent_kafka import Producer
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mastery.dev.servers import free_port
from mastery.dev.stack import DEV_JWT_SECRET
from mastery.domain import Component
from mastery.registry import FUNCTIONS
from mastery.topics import event_topic
from tests.helpers import event_data, record, tool_problem

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]


def _free_range(n: int) -> int:
    """A base port with ``n`` free ports above it (gateway + one per function)."""
    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def _free_outside(taken: set[int]) -> int:
    """A free port that is not one of ``taken`` (the range the functions will bind)."""
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


class Stack:
    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.port = _free_range(len(FUNCTIONS) + 1)
        taken = set(range(self.port, self.port + len(FUNCTIONS) + 1))
        self.kafka = _free_outside(taken)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "MASTERY_JWT_SECRET")
        }
        env |= {
            "MASTERY_PORT": str(self.port),
            "MASTERY_REDIS_PORT": str(_free_outside(taken)),
            "MASTERY_KAFKA_PORT": str(self.kafka),
            "MASTERY_DATA_DIR": tempfile.mkdtemp(prefix="mastery-e2e-"),
            **(extra_env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mastery.cli", "dev"], cwd=ROOT, env=env
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "mastery dev exited"
            try:
                resp = httpx.get(f"{self.url}/ready", timeout=2)
                if resp.status_code == 200:
                    return resp
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError("stack not ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def _bearer(sub: str, role: str, tenant: str) -> dict[str, str]:
    claims = {"sub": sub, "role": role, "tenant": tenant, "exp": int(time.time()) + 300}
    return {"authorization": f"Bearer {jwt.encode(claims, DEV_JWT_SECRET, algorithm='HS256')}"}


def test_events_show_up_in_the_score_within_a_second(stack: Stack) -> None:
    ready = httpx.get(f"{stack.url}/ready").json()
    assert set(ready["functions"]) >= {s.name for s in FUNCTIONS}

    tenant = f"e2e-{int(time.time())}"
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{stack.kafka}"})
    scores = {
        Component.COMPLETION: 1.0,
        Component.QUIZ: 0.5,
        Component.QUALITY: 0.75,
        Component.CONSISTENCY: 1.0,
    }
    for i, (component, score) in enumerate(scores.items()):
        r = record(
            component, event_data(tenant, "s1", score, datetime.now(UTC)), event_id=f"{tenant}-{i}"
        )
        producer.produce(event_topic(component), r.value, r.key, headers=list(r.headers.items()))
    producer.produce("mastery.quiz", b"poison", b"s1", headers=[("ce_id", b"x")])
    assert producer.flush(10) == 0
    sent = time.monotonic()

    doc: dict[str, object] = {}
    while time.monotonic() - sent < 5:
        resp = httpx.post(
            f"{stack.url}/mastery/query",
            json={"student_id": "s1"},
            headers=_bearer("s1", "student", tenant),
        )
        if resp.status_code == 200 and resp.json()["version"] == 4:
            doc = resp.json()
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - sent
    assert doc, "events never showed up"
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    assert doc["mastery"] == pytest.approx(0.4 * 1.0 + 0.3 * 0.5 + 0.2 * 0.75 + 0.1 * 1.0)
    assert doc["level"] == "proficient"


@pytest.mark.parametrize("route", [r for f in FUNCTIONS for r in f.routes])
def test_every_route_is_served_through_the_gateway(stack: Stack, route: str) -> None:
    method, path = route.split(" ", 1)
    if any(route in f.public for f in FUNCTIONS):  # reached the function, which wants none
        assert httpx.request(method, f"{stack.url}{path}").status_code == 200
        return
    resp = httpx.request(method, f"{stack.url}{path}", json={"student_id": "s1"})
    assert resp.status_code == 401  # reached the function, which wants a token
    assert resp.headers["content-type"] == "application/problem+json"


def test_a_student_compared_exported_and_erased(stack: Stack) -> None:
    tenant = f"e2e-gdpr-{int(time.time())}"
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{stack.kafka}"})
    for i in range(6):
        r = record(Component.QUIZ, event_data(tenant, f"s{i}", i / 10, class_id="c1"))
        producer.produce("mastery.quiz", r.value, r.key, headers=list(r.headers.items()))
    assert producer.flush(10) == 0
    admin = _bearer("a1", "admin", tenant)

    deadline = time.monotonic() + 10
    while True:
        resp = httpx.post(
            f"{stack.url}/analytics/compare", json={"student_id": "s5"}, headers=admin
        )
        if resp.status_code == 200 and resp.json()["cohort_size"] == 6:
            break
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.05)
    assert resp.json()["cohort"]["quiz"]["percentile"] == pytest.approx(100 * 5.5 / 6, abs=0.05)

    export = httpx.post(f"{stack.url}/gdpr/export", json={"student_id": "s5"}, headers=admin)
    assert export.status_code == 200
    assert [e["outcome"] for e in export.json()["events"]] == ["applied"]
    erase = httpx.post(f"{stack.url}/gdpr/erase", json={"student_id": "s5"}, headers=admin)
    assert erase.status_code == 200
    assert erase.json()["keys_deleted"] >= 3
    query = httpx.post(f"{stack.url}/mastery/query", json={"student_id": "s5"}, headers=admin)
    assert query.status_code == 404
    resp = httpx.post(f"{stack.url}/analytics/compare", json={"student_id": "s4"}, headers=admin)
    assert resp.json()["cohort_size"] == 5


async def test_an_agent_uses_every_tool_through_the_gateway(stack: Stack) -> None:
    """The SDK's client at /mcp of the gateway, with a delegated token, as an agent host."""
    tenant = f"e2e-mcp-{time.time_ns()}"
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{stack.kafka}"})
    for i in range(6):
        for component in Component:
            r = record(component, event_data(tenant, f"s{i}", 0.3 + i / 10, class_id="c1"))
            producer.produce(
                event_topic(component), r.value, r.key, headers=list(r.headers.items())
            )
    assert producer.flush(10) == 0
    admin = _bearer("a1", "admin", tenant)
    deadline = time.monotonic() + 10
    while (
        httpx.post(f"{stack.url}/analytics/compare", json={"student_id": "s5"}, headers=admin)
        .json()
        .get("cohort_size")
        != 6
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    def delegated(sub: str, role: str, **claims: object) -> str:
        body = {"sub": sub, "role": role, "tenant": tenant, "act": {"sub": "tutor-bot"}}
        body |= {"exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, DEV_JWT_SECRET, algorithm="HS256")

    async def calls(token: str, *tools: tuple[str, dict[str, object]]) -> list[Any]:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=10)
        async with (
            http,
            streamable_http_client(f"{stack.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = await session.list_tools()
            return [listed, *[await session.call_tool(n, a) for n, a in tools]]

    listed, *answers = await calls(
        delegated("t1", "teacher", classes=["c1"]),
        ("get_mastery", {"student_id": "s1"}),
        ("predict_next_week", {"student_id": "s1"}),
        ("recommend", {"student_id": "s1"}),
        ("mastery_history", {"student_id": "s1", "days": 7, "granularity": "day"}),
        ("compare_to_cohort", {"student_id": "s1", "scope": "class"}),
        ("find_students_at_risk", {"class_id": "c1", "limit": 3}),
    )
    assert len(listed.tools) == 6
    for a in answers:
        assert not a.is_error, a.content
        assert a.structured_content
        assert a.content[0].text
    assert answers[0].structured_content["mastery"] == pytest.approx(0.4)
    assert answers[4].structured_content["cohort_size"] == 6

    _, other, ghost, invalid = await calls(
        delegated("s1", "student"),
        ("get_mastery", {"student_id": "s2"}),
        ("get_mastery", {"student_id": "nobody"}),
        ("mastery_history", {"student_id": "s1", "days": 1}),
    )
    assert [a.is_error for a in (other, ghost, invalid)] == [True, True, True]
    assert [tool_problem(a)["status"] for a in (other, ghost, invalid)] == [
        403,
        403,  # a student asking for anyone else is refused before any read
        422,
    ]
    _, missing = await calls(delegated("a1", "admin"), ("get_mastery", {"student_id": "nobody"}))
    assert tool_problem(missing)["status"] == 404

    for auth in ({}, {"authorization": "Bearer forged"}):
        resp = httpx.post(f"{stack.url}/mcp", json={"jsonrpc": "2.0"}, headers=auth)
        assert resp.status_code == 401
        assert resp.headers["content-type"] == "application/problem+json"

    audit = httpx.post(
        f"{stack.url}/audit/recent",
        json={"kind": "access", "student_id": "s2"},
        headers=admin,
    )
    mine = [r for r in audit.json()["records"] if r["function"] == "mcp"]
    assert [(r["route"], r["subject"], r["actor"], r["outcome"]) for r in mine] == [
        ("tools/call get_mastery", "s1", "tutor-bot", "denied")
    ]


def test_gateway_answers_problems_for_unknown_paths(stack: Stack) -> None:
    resp = httpx.get(f"{stack.url}/no/such/path")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["correlation_id"] == resp.headers["x-correlation-id"]  # its own too
    resp = httpx.post(f"{stack.url}/mastery/query", json={"student_id": "s1"})
    assert resp.status_code == 401
    # A header with a trailing blank (an empty "Bearer ", which httpx will not even send)
    # reaches the function: its 401, not the gateway's 503.
    conn = http.client.HTTPConnection("127.0.0.1", stack.port)
    body = b'{"student_id": "s1"}'
    blank = {"authorization": "Bearer ", "content-type": "application/json"}
    conn.request("POST", "/mastery/query", body=body, headers=blank)
    assert conn.getresponse().status == 401
    conn.close()
    # A method the function does not serve: its 405, with Allow.
    resp = httpx.options(f"{stack.url}/mastery/query")
    assert (resp.status_code, resp.headers.get("allow")) == (405, "POST"), resp.text


def test_gateway_passes_the_functions_headers_on(stack: Stack) -> None:
    """What the API documents on the answer (rate-limit headers, a CSV attachment) is
    there through the gateway too."""
    tenant = f"e2e-headers-{int(time.time())}"
    r = record(Component.QUIZ, event_data(tenant, "s1", 0.5, datetime.now(UTC)))
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{stack.kafka}"})
    producer.produce(event_topic(Component.QUIZ), r.value, r.key, headers=list(r.headers.items()))
    assert producer.flush(10) == 0
    headers = _bearer("s1", "student", tenant)
    deadline = time.monotonic() + 10
    url = f"{stack.url}/mastery/query"
    while (query := httpx.post(url, json={"student_id": "s1"}, headers=headers)).status_code != 200:
        assert time.monotonic() < deadline, query.text
        time.sleep(0.05)
    assert {"ratelimit-limit", "ratelimit-remaining", "x-correlation-id"} <= set(query.headers)
    # A chunked body (Transfer-Encoding: a hop's own framing) reaches the function whole.
    chunked = httpx.post(
        url,
        content=iter([b'{"student_id":', b' "s1"}']),
        headers={**headers, "content-type": "application/json"},
    )
    assert chunked.status_code == 200, chunked.text
    csv = httpx.post(
        f"{stack.url}/analytics/mastery-history",
        json={"student_id": "s1", "format": "csv"},
        headers=headers,
    )
    assert csv.headers.get("content-disposition", "").startswith("attachment"), csv.headers


def test_mastery_batch_submits_follows_and_summarises(stack: Stack, tmp_path: Path) -> None:
    """`mastery batch` through the gateway, the priority topic and the dev stack's worker."""
    tenant = f"e2e-batch-{int(time.time())}"
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{stack.kafka}"})
    students = [f"b{i}" for i in range(120)]
    for i, student in enumerate(students):
        r = record(
            Component.QUIZ, event_data(tenant, student, (i % 10) / 10), event_id=f"{tenant}-{i}"
        )
        producer.produce("mastery.quiz", r.value, r.key, headers=list(r.headers.items()))
    assert producer.flush(10) == 0
    admin = _bearer("a1", "admin", tenant)
    deadline = time.monotonic() + 30
    for student in students:  # wait until every event is applied (partitions drain apart)
        body = {"student_id": student}
        while time.monotonic() < deadline:
            resp = httpx.post(f"{stack.url}/mastery/query", json=body, headers=admin)
            if resp.status_code == 200:
                break
            time.sleep(0.1)
    ids = tmp_path / "ids.txt"
    ids.write_text("# a comment\n" + "\n".join([*students, "nobody"]) + "\n")
    out = tmp_path / "batch.json"
    env = {**os.environ, "MASTERY_TOKEN": admin["authorization"].removeprefix("Bearer ")}
    done = subprocess.run(
        [sys.executable, "-m", "mastery.cli", "batch", "--file", str(ids), "--priority", "high",
         "--url", stack.url, "--every", "0.1", "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith(": done")
    assert lines[1] == "succeeded 120, failed 1 of 121"
    assert "errors not_found 1" in lines
    assert "students" in done.stderr  # the progress bar
    doc = json.loads(out.read_text())
    assert len(doc["results"]) == 121
    assert doc["summary"]["count"] == 120
    assert doc["priority"] == "high"


def test_each_function_serves_its_metrics_where_make_run_says(stack: Stack) -> None:
    from mastery.dev.stack import Stack as DevStack
    from mastery.dev.stack import describe

    # The address `mastery dev` prints: the first function's port, /metrics.
    dev = DevStack(ROOT / "functions", stack.port, env={"REDIS_URL": "r",
                   "KAFKA_BOOTSTRAP_SERVERS": "k", "MASTERY_JWT_SECRET": "s"})  # fmt: skip
    dev.bases = {spec.name: f"http://127.0.0.1:{stack.port + i}"
                 for i, spec in enumerate(FUNCTIONS, start=1)}  # fmt: skip
    printed = [line for line in describe(dev).splitlines() if "/metrics" in line]
    [url] = [w.rstrip(")") for w in printed[0].split() if w.endswith("/metrics)")]
    resp = httpx.get(url.removeprefix("(e.g. "), timeout=5)
    assert resp.status_code == 200
    assert "mastery_build_info{" in resp.text
    assert "mastery_requests_total" in resp.text or "# TYPE mastery_requests counter" in resp.text


def test_ctrl_c_stops_every_child(stack: Stack) -> None:
    children = _descendants(stack.proc.pid)
    assert len(children) >= 2 + 2 * len(FUNCTIONS)  # redis, tansu, functions, triggers, gateway
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)], "children left behind"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for practical purposes; ps shows it as Z.
    state = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True
    ).stdout
    return bool(state.strip()) and not state.strip().startswith("Z")

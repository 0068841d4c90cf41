"""``MASTERY_ERASURE_REPLICAS``: an erasure is answered only once Redis replicas hold it.

A Redis of the test's own with a replica per master (a single node, and a 3-master
cluster), since a failover to a replica that missed the erasure would bring the student
back. With the replicas in step the erasure is answered 200 and a replica already holds
its tombstone; with them held back (SIGSTOP) it is answered 503 naming the shortfall, and
the same request succeeds once they are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import redis as sync_redis

from mastery.bootstrap import build
from mastery.dev import servers
from mastery.domain import Component, Observation
from mastery.store import keys
from mastery.web.gdpr import erase_student
from tests.integration.conftest import serve, token

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator
    from pathlib import Path

    from mastery.settings import Settings

_WAIT_MS = 300


@contextlib.contextmanager
def _held_back(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """The replicas stop acknowledging (SIGSTOP) until the block ends."""
    for p in procs:
        os.kill(p.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGCONT)


def _wait_in_step(port: int, timeout_s: float = 20) -> None:
    """Until the replica at ``port`` is linked to its master (its first sync done)."""
    client = sync_redis.Redis(port=port)
    deadline = time.monotonic() + timeout_s
    try:
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, f"replica {port} did not link to its master"
            time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture
def replicated(
    redis_topology: str, settings: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, list[subprocess.Popen[bytes]], list[int]]]:
    """Settings naming a Redis with a replica per master; the replicas' processes, ports."""
    if redis_topology == "single":
        master, replica = servers.free_port(), servers.free_port()
        (tmp_path / "m").mkdir()
        (tmp_path / "r").mkdir()
        procs = [servers.start_redis(master, tmp_path / "m")]
        of = ("--replicaof", "127.0.0.1", str(master))
        procs.append(servers.start_redis(replica, tmp_path / "r", *of))
        ports = [master, replica]
    else:
        ports = servers.free_cluster_ports(6)
        procs = servers.start_redis_cluster(ports, tmp_path, replicas=1)
    half = len(procs) // 2  # the masters come first
    try:
        for port in ports[half:]:
            _wait_in_step(port)
        update = {
            "redis_url": f"redis://127.0.0.1:{ports[0]}/0",
            "redis_cluster": redis_topology == "cluster",
            "erasure_replicas": 1,
            "erasure_wait_ms": _WAIT_MS,
        }
        yield settings.model_copy(update=update), procs[half:], ports[half:]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
            servers.stop(p)


async def test_an_erasure_is_answered_once_a_replica_holds_it(
    replicated: tuple[Settings, list[subprocess.Popen[bytes]], list[int]], tenant: str
) -> None:
    settings, replicas, replica_ports = replicated
    res = build(settings)
    admin = token("a", "admin", tenant)
    try:
        now = datetime.now(UTC)
        events = [Observation(f"e-{s}", tenant, s, Component.QUIZ, 0.7, now) for s in ("s1", "s2")]
        await res.store.apply([(o, b"{}") for o in events], [], now)
        async with serve("gdpr-erase", {"POST /gdpr/erase": erase_student}, res) as erase:
            done = await erase.post("/gdpr/erase", json={"student_id": "s1"}, headers=admin)
            held = [r for r in replica_ports if _holds_tombstone(r, tenant, "s1")]
            with _held_back(replicas):
                short = await erase.post("/gdpr/erase", json={"student_id": "s2"}, headers=admin)
            for _ in range(5):  # as a client would, after Retry-After: the replica catches up
                again = await erase.post("/gdpr/erase", json={"student_id": "s2"}, headers=admin)
                if again.status_code != 503:
                    break
                await asyncio.sleep(1)
    finally:
        await res.aclose()

    assert done.status_code == 200, done.text
    assert held, "no replica held the tombstone when the erasure was answered"
    assert short.status_code == 503
    assert short.headers["content-type"] == "application/problem+json"
    assert short.headers["retry-after"] == "1"
    detail = short.json()["detail"]
    required = "0 of the 1 Redis replicas required (MASTERY_ERASURE_REPLICAS)"
    assert f"{required} confirmed it within {_WAIT_MS} ms" in detail
    assert again.status_code == 200, again.text
    assert any(_holds_tombstone(r, tenant, "s2") for r in replica_ports)


def _holds_tombstone(port: int, tenant: str, student: str) -> bool:
    """Whether the replica at ``port`` has the student's tombstone (``READONLY``: a
    cluster replica answers reads of its own master's slots on this connection)."""
    client = sync_redis.Redis(port=port)
    try:
        with contextlib.suppress(sync_redis.ResponseError):  # not a cluster node
            client.execute_command("READONLY")
        try:
            return client.zscore(keys.erased(tenant), student) is not None
        except sync_redis.ResponseError:  # MOVED: a replica of another master
            return False
    finally:
        client.close()
